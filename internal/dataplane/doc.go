// Package dataplane runs tenantmem's data plane in one process: the router pool of the control
// database (logged in as the router role, refused when it is a superuser, has BYPASSRLS or belongs
// to the owner role), the pools of every other placement and tenant database within one
// connection budget (internal/placement, with the router's credentials for each placement), the
// tenant resolver kept fresh by LISTEN/NOTIFY (routing.Listen, reconnecting), the HTTP router
// (httpapi.NewRouter) with graceful shutdown, and the embedding worker that embeds the chunks ingest
// left queued when the provider failed.
//
// The worker's source is each placement's work queue (memory.WorkQueue): the tenants that have
// embedding jobs, listed by ingest in the transaction that queued them and found with one index
// probe, never by visiting every tenant. A tenant whose queue cannot be read stays listed and is
// tried again with backoff; jobs are claimed with SKIP LOCKED and a lease that the worker renews
// while the provider works (memory.Worker), so any number of replicas share the queues safely and
// a killed replica's jobs are free again within the lease. While the provider's circuit breaker is
// open the worker takes no work. A slow reconciliation of every active tenant, rate-bounded, runs at
// start and every ReconcileInterval for work the queue does not know of.
//
// The pool closes a connection once it served MaxConnSchemas distinct schemas (connrecycle), so
// no backend keeps the catalog caches of thousands of tenant schemas (docs/scaling.md).
//
// cmd/router and cmd/devstack (make run) both run a [Service]. A Service is safe for concurrent
// use.
package dataplane
