//! Ferry durable receipt store (in progress).
