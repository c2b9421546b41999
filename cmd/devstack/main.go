// Command devstack is `make run`: it starts a private PostgreSQL cluster with pgvector under a data
// folder (initdb on first use, no system service), initialises tenantmem in it, and serves the
// provisioning API and the tenant router until interrupted, then stops the cluster. It is for
// development only: the cluster trusts loopback connections.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv, Environ: os.Environ}
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		stop()
		os.Exit(1)
	}
}
