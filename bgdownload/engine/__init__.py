"""One download: source, transport with the destination guard, writer, segments and speed limits."""
