use std::fmt;

macro_rules! byte_newtype {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes on the wire.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, as used in logs, JSON and file names.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity($len * 2);
                for b in self.0 {
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                s
            }

            /// Parses lower- or upper-case hex of exactly the right length.
            pub fn from_hex(s: &str) -> Option<Self> {
                let bytes = s.as_bytes();
                if bytes.len() != $len * 2 {
                    return None;
                }
                let mut out = [0u8; $len];
                for (i, pair) in bytes.chunks_exact(2).enumerate() {
                    out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
                }
                Some(Self(out))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

byte_newtype!(
    /// Identifies one Ferry deployment (ledger + its relays and clients); bound into every
    /// signature so messages cannot be replayed across networks.
    NetworkId,
    16
);
byte_newtype!(
    /// An Ed25519 public key (relay identity, client identity or ledger key).
    PublicKey,
    32
);
byte_newtype!(
    /// A relay-chosen random session identifier.
    SessionId,
    16
);
byte_newtype!(
    /// SHA-256 of a voucher's canonical signed encoding.
    VoucherId,
    32
);
byte_newtype!(
    /// SHA-256 of a relay descriptor's canonical signed encoding; the directory's annotation
    /// names the descriptor it goes with by it.
    DescriptorId,
    32
);
byte_newtype!(
    /// An Ed25519 signature.
    Signature,
    64
);

impl Signature {
    /// An all-zero placeholder (never verifies); used before a message is signed.
    pub const ZERO: Self = Self([0; 64]);
}
