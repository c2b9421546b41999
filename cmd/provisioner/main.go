// Command provisioner is tenantmem's control plane: it initialises a deployment, creates,
// suspends, resumes and deletes tenants, issues and revokes API keys, migrates every tenant, and
// serves the provisioning HTTP API. Run `provisioner --help`.
//
// Exit codes: 0 success; 2 bad input (usage, invalid tenant id or tier, unknown or duplicate
// tenant, a tenant in the wrong state, missing configuration); 1 any other failure.
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
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv, Environ: os.Environ}
	code := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
