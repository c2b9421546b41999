// Package httpapi holds tenantmem's HTTP layer: the pieces every server shares and the
// provisioner's admin API.
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
// Handlers built here are safe for concurrent use.
package httpapi
