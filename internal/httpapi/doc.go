// Package httpapi holds tenantmem's HTTP layer: the pieces every server shares, the provisioner's
// admin API and the tenant router.
//
// Shared by every server ([New]): one error table ([DefaultErrorRules], [MapError]) rendered by a
// custom echo error handler as {"error": {"code", "message"}}; a request id (X-Request-Id, taken
// from the request when sane, else generated, and echoed back); a JSON access log through
// log/slog; panic recovery; a request body limit; Prometheus metrics with bounded labels
// (tenantmem_http_requests_total, tenantmem_http_request_duration_seconds) on a caller-provided
// registry; and GET /healthz, /readyz and /metrics. [Server] serves any handler on a listener with
// timeouts and a graceful shutdown.
//
// The admin API ([NewAdmin]) is the provisioning API of DESIGN.md, behind a bearer admin token
// compared in constant time. Tenant ids contain "/"; in paths they are URL-escaped
// (org-1%2Fws-2): routing runs on the escaped path and each parameter is unescaped once, then
// validated, so an escaped ".." or "/" can never select another tenant.
//
// The router ([NewRouter]) is the document and search API of DESIGN.md behind a tenant's API key
// ("Authorization: Bearer tm_..."), resolved by a routing.Resolver; the tenant comes only from the
// key. Bodies reject unknown fields and routes reject query parameters they do not take, so a
// tenant_id, owner_id or schema sent by a client is refused with 400 naming it. Each request runs
// the memory engine in one transaction of the tenant's memory.Scope. [RouterErrorRules] extends
// the error table with the engine's and the resolver's errors.
//
// Handlers built here are safe for concurrent use.
package httpapi
