// Package limit keeps one tenant from stalling the others.
//
//   - [Limits] are a tenant's share: a request rate (token bucket), a number of requests in flight,
//     and storage quotas (documents, chunks, content bytes). [Config] holds the deployment's
//     defaults; a tenant's overrides come from the registry (registry.TenantLimits).
//   - [Limiter] admits a tenant's request or refuses it at once with a [*RateLimitError] (HTTP 429
//     with Retry-After): over its request rate, or with too many requests in flight.
//   - [Acquire] is the only way a request gets a database connection: it waits a bounded time for
//     a slot of each [Gate] it is given (a share of the pool, e.g. per tier) and then for a pooled
//     connection, and gives up with a [*BusyError] (HTTP 503 with Retry-After) instead of queueing
//     for ever. A budget shared by several pools is one more Gate.
//
// Everything here is safe for concurrent use.
package limit
