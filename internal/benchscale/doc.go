// Package benchscale holds the fleet-scale benchmark (`make bench-scale`, not part of CI): one
// PostgreSQL server taken to 10,000 schema-tier and 1,000,000 shared-tier tenants through the
// provisioner and the router, measuring what must not grow with the number of tenants (creation
// rate and server CPU per tenant, migration times, router backend memory, search latency, bulk
// registration). It has no code outside its test; docs/benchmarks.md records its figures.
package benchscale
