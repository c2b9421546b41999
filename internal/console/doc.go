// Package console is the operator console: a small server-rendered web interface, served by the
// provisioner under /console/, that shows the tenants (search by id prefix, keyset paging), a
// tenant's detail with its keys and audit log, the placements and the long-running operations,
// and suspends, resumes, issues and revokes keys after a confirmation step.
//
// Security model: the admin token is entered once on the login form and never stored in the
// browser; a login creates a server-side session (random 256-bit id, absolute expiry) held in
// memory and named by an HttpOnly, SameSite=Strict cookie (Secure over TLS or when configured).
// Every state change is a POST that must carry the session's CSRF token and come from the
// console's own origin (Sec-Fetch-Site/Origin, with Referer as the fallback); GET never changes
// state. Pages are html/template (contextual escaping of every value), served with a strict
// Content-Security-Policy (no script at all), frame-ancestors 'none' and Cache-Control: no-store.
// An issued key's secret is rendered once, in the response to the POST that created it.
//
// A Console is safe for concurrent use. Sessions live in process memory: a restart logs everyone
// out, and several provisioner processes behind one address need sticky sessions.
package console
