'use strict';
'require view';
'require form';
'require fs';
'require poll';
'require dom';
'require ui';

/*
 * Ferry settings (UCI config "ferry", rendered to the agent's TOML by /etc/init.d/ferry) and a
 * status panel. The status comes from the agent's local status API (GET ferry.main.status_url,
 * default http://127.0.0.1:9586/status), fetched on the router by /usr/libexec/ferry-status.
 * Status JSON fields (all optional; documented in docs/openwrt.md):
 *   version, uptime_secs, public_key, listen, egress_mode,
 *   peers: [{ name, public_key, endpoint, last_handshake_secs, rx_bytes, tx_bytes }] (trusted),
 *   paid: { sessions, earned_bytes, receipts_cosigned, receipts_pending, receipts_submitted,
 *           ledger_configured, last_ledger_contact_secs, ledger_error,
 *           directory: null | { listed, seen_from, probe_rtt_micros, problems: [{ code, message }],
 *                               error } } (paying clients: counts only)
 * When the agent cannot be reached the helper prints { "running": false, "error": "..." } on
 * stdout (fs.exec_direct returns stdout only; stderr would be lost).
 */

var STATUS_HELPER = '/usr/libexec/ferry-status';
var PAUSE_HELPER = '/usr/libexec/ferry-pause';

// Pause or resume sharing (ferry-agent pause|resume through the helper), then show its answer.
function setPaused(pause) {
	return fs.exec_direct(PAUSE_HELPER, [pause ? 'pause' : 'resume']).then(function(out) {
		ui.addNotification(null, E('p', {}, String(out || '').trim()), 'info');
	}).catch(function(err) {
		ui.addNotification(null, E('p', {}, err.message || String(err)), 'danger');
	});
}

function fetchStatus() {
	return fs.exec_direct(STATUS_HELPER).then(function(out) {
		if (out == null || String(out).trim() === '')
			return { running: false };
		try {
			return JSON.parse(out);
		}
		catch (e) {
			return { error: _('The agent returned invalid JSON') };
		}
	}).catch(function(err) {
		return { error: err.message || String(err) };
	});
}

function fmtBytes(n) {
	return (typeof n == 'number') ? '%1024.2mB'.format(n) : '-';
}

function fmtSecs(n) {
	return (typeof n == 'number') ? '%t'.format(n) : '-';
}

function fmtAgo(n) {
	return (typeof n == 'number') ? _('%s ago').format('%t'.format(n)) : _('never');
}

function text(v) {
	return (v == null || v === '') ? '-' : String(v);
}

// The owner's quota and schedule (status paid.sharing), only the rows that are set.
function sharingRows(sh) {
	var rows = [];
	var used = function(bytes, quota) {
		return typeof quota == 'number'
			? _('%s of %s').format(fmtBytes(bytes), fmtBytes(quota)) : fmtBytes(bytes);
	};
	if (typeof sh.daily_quota_bytes == 'number')
		rows.push([_('Shared today'), used(sh.used_today_bytes, sh.daily_quota_bytes) + ' · ' +
			_('resets in %s').format(fmtSecs(sh.daily_reset_in_secs))]);
	if (typeof sh.monthly_quota_bytes == 'number')
		rows.push([_('Shared this month'), used(sh.used_this_period_bytes, sh.monthly_quota_bytes) + ' · ' +
			_('resets in %s').format(fmtSecs(sh.monthly_reset_in_secs))]);
	if (sh.schedule && sh.schedule.length)
		rows.push([_('Sharing hours'), sh.schedule.join(', ') + ' (' + text(sh.timezone) + ')']);
	return rows;
}

function renderStatus(st) {
	if (st && st.running === false)
		return E('p', {}, E('em', {}, _('The agent is not running') +
			(st.error ? ' (' + st.error + ')' : '')));
	if (!st || st.error)
		return E('p', {}, E('em', {}, _('The agent is not running or its status API is unreachable') +
			(st && st.error ? ' (' + st.error + ')' : '')));

	var info = [
		[_('Version'), text(st.version)],
		[_('Uptime'), fmtSecs(st.uptime_secs)],
		[_('Public key'), text(st.public_key)],
		[_('Listening on'), text(st.listen)],
		[_('Egress'), text(st.egress_mode)]
	];
	var infoTable = E('table', { 'class': 'table' }, info.map(function(row) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'width': '33%' }, row[0]),
			E('td', { 'class': 'td left' }, row[1])
		]);
	}));

	var peers = Array.isArray(st.peers) ? st.peers : [];
	var peerRows = [
		E('tr', { 'class': 'tr table-titles' }, [
			E('th', { 'class': 'th' }, _('Name')),
			E('th', { 'class': 'th' }, _('Public key')),
			E('th', { 'class': 'th' }, _('Endpoint')),
			E('th', { 'class': 'th' }, _('Last handshake')),
			E('th', { 'class': 'th' }, _('Received')),
			E('th', { 'class': 'th' }, _('Sent'))
		])
	];
	peers.forEach(function(p) {
		peerRows.push(E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td' }, text(p.name)),
			E('td', { 'class': 'td' }, text(p.public_key)),
			E('td', { 'class': 'td' }, text(p.endpoint)),
			E('td', { 'class': 'td' }, fmtAgo(p.last_handshake_secs)),
			E('td', { 'class': 'td' }, fmtBytes(p.rx_bytes)),
			E('td', { 'class': 'td' }, fmtBytes(p.tx_bytes))
		]));
	});
	if (!peers.length)
		peerRows.push(E('tr', { 'class': 'tr placeholder' }, E('td', { 'class': 'td' }, _('No peers connected'))));

	var parts = [infoTable];
	if (st.paid) {
		var p = st.paid;
		var contact = !p.ledger_configured ? _('no ledger URL configured: receipts stay on the router')
			: (typeof p.last_ledger_contact_secs == 'number' ? fmtAgo(p.last_ledger_contact_secs) : _('not yet'));
		var sh = p.sharing || {};
		var state = p.paused ? _('paused by you: no paid sessions until you resume')
			: (sh.state && sh.state != 'sharing') ? _('not sharing now: %s').format(text(sh.why)) : _('on');
		var rows = [
			[_('Sharing'), E([], [
				state,
				' ',
				E('button', {
					'class': 'cbi-button ' + (p.paused ? 'cbi-button-apply' : 'cbi-button-reset'),
					'click': function() { return setPaused(!p.paused); }
				}, p.paused ? _('Resume sharing') : _('Pause sharing'))
			])],
			[_('Paid sessions'), text(p.sessions)],
			[_('Earned (co-signed traffic)'), fmtBytes(p.earned_bytes)],
			[_('Receipts co-signed'), text(p.receipts_cosigned)],
			[_('Waiting for the ledger'), text(p.receipts_pending)],
			[_('Submitted to the ledger'), text(p.receipts_submitted)],
			[_('Last ledger contact'), contact]
		];
		rows = rows.concat(sharingRows(sh));
		if (p.ledger_error)
			rows.push([_('Ledger problem'), _('The ledger could not be reached or refused: %s').format(p.ledger_error)]);
		var d = p.directory;
		if (d) {
			var listed = d.listed
				? _('listed (seen from %s%s)').format(text(d.seen_from),
					typeof d.probe_rtt_micros == 'number' ? _(', probe answered in %s ms').format(String(Math.round(d.probe_rtt_micros / 1000))) : '')
				: _('not listed');
			rows.push([_('Relay directory'), listed]);
			(d.problems || []).forEach(function(pr) {
				rows.push([_('Directory problem'), text(pr.message)]);
			});
			if (d.error)
				rows.push([_('Directory problem'), _('Announcing failed: %s').format(d.error)]);
		}
		parts.push(E('h4', {}, _('Paid sharing')));
		parts.push(E('table', { 'class': 'table' }, rows.map(function(row) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, row[0]),
				E('td', { 'class': 'td left' }, row[1])
			]);
		})));
	}
	parts.push(E('h4', {}, _('Trusted peers')));
	parts.push(E('table', { 'class': 'table' }, peerRows));
	return E([], parts);
}

// A GiB amount as ferry-render.sh's ferry_gib accepts it: 50, 0.5.
function validateGib(section_id, value) {
	if (value == null || value === '' || /^[0-9]+(\.[0-9]+)?$/.test(value))
		return true;
	return _('Expecting a number of GiB like 50 or 0.5');
}

// One sharing window as the agent parses it (router-agent/src/share.rs): DAYS HH:MM-HH:MM,
// DAYS = daily, mon..sun, ranges (mon-fri) and lists (sat,sun).
function validateSchedule(section_id, value) {
	var day = '(mon|tue|wed|thu|fri|sat|sun)';
	var days = '(daily|' + day + '(-' + day + ')?(,' + day + '(-' + day + ')?)*)';
	var time = '([01][0-9]|2[0-3]):[0-5][0-9]';
	if (value == null || value === '' ||
	    new RegExp('^' + days + ' ' + time + '-(' + time + '|24:00)$').test(value))
		return true;
	return _('Expecting days and hours, e.g. mon-fri 18:00-23:30');
}

function validateService(section_id, value) {
	if (value == null || value === '' || /^(udp|tcp)\/[0-9]{1,5}$/.test(value))
		return true;
	return _('Expecting udp/PORT or tcp/PORT');
}

// The agent's exit port rule (router-agent/src/config.rs parse_port_rule): [tcp/|udp/]PORT[-PORT];
// block_port also takes 'none' (every port open; alone).
function validatePortRule(section_id, value) {
	if (value == null || value === '' || (value === 'none' && (this.option || this.name) === 'block_port'))
		return true;
	var m = /^(?:(?:udp|tcp)\/)?([0-9]{1,5})(?:-([0-9]{1,5}))?$/.exec(value);
	var lo = m ? +m[1] : 0, hi = m && m[2] ? +m[2] : lo;
	if (m && lo >= 1 && hi <= 65535 && lo <= hi)
		return true;
	return _('Expecting tcp/PORT, udp/PORT-PORT or PORT (TCP and UDP)');
}

// The agent's rule for egress.tun-name (router-agent/src/config.rs check_ifname): 1..=15 of
// [A-Za-z0-9-_.], not "." or "..". LuCI's netdevname allows more (e.g. '@', '+').
function validateIfname(section_id, value) {
	if (value == null || value === '' ||
	    (/^[A-Za-z0-9._-]{1,15}$/.test(value) && value !== '.' && value !== '..'))
		return true;
	return _('Up to 15 characters of A-Z a-z 0-9 - _ . (a Linux interface name)');
}

// The renderer's and agent's port rule: a decimal 1..65535 (LuCI's port datatype allows 0).
function validatePort(section_id, value) {
	if (value == null || value === '' || (/^[0-9]{1,5}$/.test(value) && +value >= 1 && +value <= 65535))
		return true;
	return _('Expecting a port number 1-65535');
}

// Exactly N hex digits (network id 32, ledger key 64), as the renderer checks.
function hexValidator(n) {
	return function(section_id, value) {
		if (value == null || value === '' || new RegExp('^[0-9a-fA-F]{' + n + '}$').test(value))
			return true;
		return _('Expecting %d hexadecimal digits').format(n);
	};
}

function validateLedgerUrl(section_id, value) {
	if (value == null || value === '' || /^http:\/\/[^\s\/]+/.test(value))
		return true;
	return _('Expecting an http:// URL');
}

// Receipts owed must survive reboots: not on tmpfs (/tmp, and /var which links to it).
function validateStateDir(section_id, value) {
	if (value == null || value === '')
		return true;
	if (!/^\//.test(value))
		return _('Expecting an absolute path');
	if (/^\/(tmp|var)(\/|$)/.test(value))
		return _('On tmpfs: receipts would be lost at reboot; use a directory on flash such as /etc/ferry/state');
	return true;
}

function validateName(section_id, value) {
	if (value == null || value === '' || /^[A-Za-z0-9._@-]{1,64}$/.test(value))
		return true;
	return _('Up to 64 characters of A-Z a-z 0-9 - _ . @');
}

function validateKey(section_id, value) {
	if (/^[A-Za-z0-9+/]{43}=$/.test(value || ''))
		return true;
	return _('Expecting a base64 WireGuard public key (44 characters)');
}

return view.extend({
	load: function() {
		return fetchStatus();
	},

	render: function(status) {
		var m, s, o;

		m = new form.Map('ferry');

		s = m.section(form.NamedSection, 'main', 'ferry', _('Agent'));
		s.tab('general', _('General'));
		s.tab('egress', _('Egress policy'));
		s.tab('paid', _('Paid sharing'));
		s.tab('advanced', _('Advanced'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;

		o = s.taboption('general', form.Value, 'listen_port', _('WireGuard port'),
			_('UDP port; the firewall rule "Allow-Ferry-WireGuard" must open the same port on wan.'));
		o.validate = validatePort;
		o.placeholder = '51820';

		o = s.taboption('general', form.ListValue, 'listen_addr', _('Listen address'));
		o.value('0.0.0.0', _('IPv4 (0.0.0.0)'));
		o.value('::', _('IPv4 and IPv6 (::)'));
		o.default = '0.0.0.0';

		o = s.taboption('general', form.Value, 'mtu', _('Tunnel MTU'));
		o.datatype = 'range(576,9000)';
		o.placeholder = '1420';

		o = s.taboption('general', form.DynamicList, 'address', _('Tunnel addresses'),
			_('The relay\'s own addresses; their prefixes are the client subnets.'));
		o.datatype = 'cidr';

		o = s.taboption('egress', form.ListValue, 'egress_mode', _('Egress mode'));
		o.value('tun', _('Kernel TUN device (firewall zone "ferry")'));
		o.value('userspace', _('Userspace network stack (no TUN)'));
		o.default = 'tun';

		o = s.taboption('egress', form.Value, 'tun_name', _('TUN device'));
		o.depends('egress_mode', 'tun');
		o.validate = validateIfname;
		o.placeholder = 'ferry0';

		o = s.taboption('egress', form.Flag, 'masquerade', _('Agent masquerade'),
			_('Let the agent install its own NAT. Not needed when the wan zone masquerades.'));
		o.depends('egress_mode', 'tun');

		o = s.taboption('egress', form.DynamicList, 'allow', _('Allowed private ranges'),
			_('Private or special ranges clients may reach anyway (blocked by default).'));
		o.datatype = 'cidr';

		o = s.taboption('egress', form.DynamicList, 'deny', _('Blocked ranges'),
			_('Additional destinations clients may not reach.'));
		o.datatype = 'cidr';

		o = s.taboption('egress', form.DynamicList, 'tunnel_service', _('Services on the relay'),
			_('Ports clients may reach on the relay\'s tunnel addresses, e.g. udp/53.'));
		o.validate = validateService;

		o = s.taboption('egress', form.DynamicList, 'block_port', _('Blocked exit ports'),
			_('Ports clients may not use on the internet (tcp/25 keeps spam off this household\'s IP); \'none\' opens every port. Advertised in the relay directory.'));
		o.validate = validatePortRule;

		o = s.taboption('egress', form.DynamicList, 'allow_port', _('Only these exit ports'),
			_('A reduced exit policy: clients may use only these ports (leave Blocked exit ports empty).'));
		o.validate = validatePortRule;

		o = s.taboption('egress', form.Flag, 'tunnel_ping', _('Answer ping on tunnel addresses'));
		o.default = '1';

		o = s.taboption('egress', form.Value, 'max_peers', _('Maximum peers'));
		o.datatype = 'uinteger';
		o.placeholder = '1024';

		o = s.taboption('egress', form.Value, 'client_rate_mbit', _('Per-client rate limit (Mbit/s)'),
			_('Each direction; 0 means unlimited.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';

		o = s.taboption('egress', form.Value, 'share_up_mbit', _('Shared upload, all paying clients (Mbit/s)'),
			_('Client to internet, all paying clients together; 0 means unlimited. Your own devices are never limited.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';

		o = s.taboption('egress', form.Value, 'share_down_mbit', _('Shared download, all paying clients (Mbit/s)'),
			_('Internet to client, all paying clients together; 0 means unlimited.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';

		o = s.taboption('paid', form.Value, 'daily_quota_gib', _('Daily quota (GiB)'),
			_('Paid traffic per day, both directions (e.g. 5 or 0.5); 0 means none. At the quota paying clients are told and disconnected until midnight.'));
		o.validate = validateGib;
		o.placeholder = '0';

		o = s.taboption('paid', form.Value, 'monthly_quota_gib', _('Monthly quota (GiB)'),
			_('Paid traffic per month, both directions; 0 means none.'));
		o.validate = validateGib;
		o.placeholder = '0';

		o = s.taboption('paid', form.Value, 'quota_reset_day', _('Monthly quota starts on day'),
			_('Day of the month (1-31; 31 = the last day of every month).'));
		o.datatype = 'range(1,31)';
		o.placeholder = '1';

		o = s.taboption('paid', form.DynamicList, 'schedule', _('Sharing hours'),
			_('When paying clients may connect, in this router\'s time zone (System > Time zone), e.g. mon-fri 18:00-23:30 or sat,sun 00:00-24:00. Empty means always.'));
		o.validate = validateSchedule;

		o = s.taboption('paid', form.Value, 'timezone', _('Time zone for sharing hours'),
			_('Leave empty to use this router\'s (System > Time zone). Or a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3.'));
		o.optional = true;

		o = s.taboption('paid', form.Flag, 'paid', _('Earn from paying clients'),
			_('Join a Ferry network: paying clients connect with vouchers, the agent signs receipts and the ledger credits this router.'));

		o = s.taboption('paid', form.Value, 'network_id', _('Network id'),
			_('32 hexadecimal digits, from the network\'s ledger (GET /v1/info).'));
		o.depends('paid', '1');
		o.validate = hexValidator(32);

		o = s.taboption('paid', form.Value, 'ledger_key', _('Ledger key'),
			_('64 hexadecimal digits: the key vouchers are signed with.'));
		o.depends('paid', '1');
		o.validate = hexValidator(64);

		o = s.taboption('paid', form.Value, 'ledger_url', _('Ledger URL'),
			_('Where co-signed receipts are submitted; without it they stay on the router.'));
		o.depends('paid', '1');
		o.placeholder = 'http://ledger.example.net:7878';
		o.validate = validateLedgerUrl;

		o = s.taboption('paid', form.Value, 'price_micros_per_gib', _('Price (micros per GiB)'),
			_('This relay\'s price in millionths of a currency unit per GiB, signed into every session; clients whose voucher allows less are refused. Empty: the network price, asked from the ledger (needs the ledger URL).'));
		o.depends('paid', '1');
		o.datatype = 'range(1,999999999)';
		o.placeholder = '500000';

		o = s.taboption('paid', form.Value, 'identity_key_file', _('Identity key file'),
			_('Receipt signing key, created (mode 0600) on first start; register its public key at the ledger.'));
		o.depends('paid', '1');
		o.placeholder = '/etc/ferry/identity.key';

		o = s.taboption('paid', form.Value, 'state_dir', _('Receipt store directory'),
			_('On flash so receipts owed survive reboots (not /tmp).'));
		o.depends('paid', '1');
		o.placeholder = '/etc/ferry/state';
		o.validate = validateStateDir;

		o = s.taboption('paid', form.Value, 'receipt_every_mib', _('Receipt every (MiB)'));
		o.depends('paid', '1');
		o.datatype = 'range(1,1024)';
		o.placeholder = '4';

		o = s.taboption('paid', form.Value, 'credit_window_mib', _('Credit window (MiB)'),
			_('At most this much is forwarded beyond the last co-signed receipt.'));
		o.depends('paid', '1');
		o.datatype = 'range(1,4096)';
		o.placeholder = '16';

		o = s.taboption('paid', form.Value, 'max_sessions_per_voucher', _('Sessions per voucher'));
		o.depends('paid', '1');
		o.datatype = 'range(1,1024)';
		o.placeholder = '2';

		o = s.taboption('paid', form.Value, 'max_sessions_per_client', _('Sessions per client'));
		o.depends('paid', '1');
		o.datatype = 'range(1,1024)';
		o.placeholder = '2';

		o = s.taboption('advanced', form.Value, 'private_key_file', _('Private key file'),
			_('Created (mode 0600) on first start if missing; kept across sysupgrade.'));
		o.placeholder = '/etc/ferry/wg.key';

		o = s.taboption('advanced', form.ListValue, 'log_level', _('Log level'));
		['error', 'warn', 'info', 'debug'].forEach(function(l) { o.value(l); });
		o.default = 'info';

		o = s.taboption('advanced', form.Value, 'status_url', _('Status API URL'));
		o.placeholder = 'http://127.0.0.1:9586/status';

		o = s.taboption('advanced', form.Value, 'status_token_file', _('Status API token file'),
			_('Only if the agent\'s [metrics] token-file is set; needs curl.'));

		o = s.taboption('advanced', form.Value, 'extra_toml', _('Extra TOML file'),
			_('Appended to the generated agent config (sections not modelled here).'));
		o.placeholder = '/etc/ferry/extra.toml';

		s = m.section(form.GridSection, 'peer', _('Trusted peers'),
			_('Non-paying peers (e.g. your own devices). Paying clients do not need an entry.'));
		s.anonymous = true;
		s.addremove = true;

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.editable = true;

		o = s.option(form.Value, 'name', _('Name'));
		o.validate = validateName;

		o = s.option(form.Value, 'public_key', _('Public key'));
		o.validate = validateKey;

		o = s.option(form.DynamicList, 'allowed_ip', _('Allowed IPs'));
		o.datatype = 'cidr';

		var statusNode = E('div', { 'class': 'cbi-section' }, renderStatus(status));

		poll.add(function() {
			return fetchStatus().then(function(st) {
				dom.content(statusNode, renderStatus(st));
			});
		}, 5);

		return m.render().then(function(mapNode) {
			return E([], [
				E('h2', {}, _('Ferry relay')),
				E('p', { 'class': 'cbi-map-descr' },
					_('Share this router\'s internet connection with paying Ferry clients over WireGuard. ' +
					  'Clients never reach the router itself or the household network unless allowed below.')),
				E('h3', {}, _('Status')),
				statusNode,
				mapNode
			]);
		});
	}
});
