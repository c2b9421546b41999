// Command router is tenantmem's data plane: the tenant-routed HTTP API that SaaS backends call
// with a tenant's API key. It resolves each key to its tenant through LRU caches kept fresh by
// LISTEN/NOTIFY, runs every request in one transaction scoped to the tenant (search_path and owner
// id set transaction-locally), and embeds chunks that ingest left queued. Run `router --help`.
//
// Exit codes: 0 after a graceful shutdown; 2 bad configuration (usage, an unsafe database role, an
// embedding dimension that does not match the deployment); 1 any other failure.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling: a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv, Environ: os.Environ}
	code := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
