// Package placement connects to the PostgreSQL servers that hold tenants (placements) and to
// their databases: the main database of each placement (the shared and schema tiers) and every
// tenant database (the database tier).
//
// Where a placement is comes from the registry (host, port, main database); who connects comes
// from this process's configuration ([Credentials]: a credentials file, environment variables, or
// failing both PostgreSQL's passfile), never from the registry. The local placement is the
// control server and always uses the control pool's own settings.
//
// [Pools] keeps one pgxpool per (placement, database), created on first use, in least recently
// used order, closed when evicted but never while a transaction holds it. Every pool's new
// connections share one budget, taken when a socket is dialled and given back when it is closed,
// so a burst of cold tenants waits (closing idle connections of other pools) instead of opening
// more connections than the servers were promised. Any failure to reach a placement wraps
// [ErrUnavailable], which the router answers with 503 and Retry-After.
package placement
