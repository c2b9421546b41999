// Package dataplane runs tenantmem's data plane in one process: the router pool of the control
// database (logged in as the router role, refused when it is a superuser, has BYPASSRLS or belongs
// to the owner role), the pools of every other placement and tenant database within one
// connection budget (internal/placement, with the router's credentials for each placement), the
// tenant resolver kept fresh by LISTEN/NOTIFY (routing.Listen, reconnecting), the HTTP router
// (httpapi.NewRouter) with graceful shutdown, and the embedding worker that embeds the chunks ingest
// left queued when the provider failed.
//
// The worker's source is the set of tenants that queued embeddings at ingest (the router's
// OnIngest), plus a sweep of every active tenant at start and every SweepInterval, so that work left
// by a crash or by another replica is picked up. Jobs are claimed with SKIP LOCKED and a lease
// (memory.Worker), so any number of replicas share the queues safely.
//
// cmd/router and cmd/devstack (make run) both run a [Service]. A Service is safe for concurrent
// use.
package dataplane
