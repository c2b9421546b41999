// Package routing resolves an API key to the tenant it belongs to and to a handle that says where
// the tenant's rows live, with two LRU caches so that a hot key costs no query:
//
//   - keys: key id -> the key's secret hash, tenant id and revocation, verified in constant time;
//   - handles: tenant id -> tier, location (registry.Location), status and what hands out
//     connections to the location's database (the control pool, or Config.Pools).
//
// Registry changes arrive by LISTEN/NOTIFY on registry.Channel (see [Listener]) and evict at once.
// When the listening connection drops, every cached entry is purged before listening resumes, so a
// notification missed while disconnected can never leave a stale route behind. As a last line of
// defence each entry also expires after Config.TTL.
//
// A *Resolver is safe for concurrent use.
package routing
