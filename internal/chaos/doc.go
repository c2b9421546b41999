// Package chaos holds the fault tests of the router (issue 9): a TCP proxy between the router
// and PostgreSQL that cuts or freezes every connection, backends terminated by an administrator,
// a server restarted or down in the middle of the load, and (with the chaos build tag, as root)
// a full disk. Each scenario drives a mixed load of tenants in both tiers and records the status
// codes clients saw, then checks the truth: no 400 or 500 for a database fault, every answer 503
// carries Retry-After, no acknowledged write is lost and no retried write is doubled.
//
// `make test` runs each scenario briefly; `make chaos` runs them longer (TENANTMEM_CHAOS_SECONDS,
// default 20 per scenario) with the full-disk scenario, and prints the status codes per fault.
// The package has no non-test code.
package chaos
