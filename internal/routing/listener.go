package routing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// ListenerApplicationName is the application_name of the listener's connection, unless its
// ConnConfig sets one.
const ListenerApplicationName = "tenantmem-registry-listener"

// ListenerConfig configures [Listen].
type ListenerConfig struct {
	// ConnConfig is how to open the dedicated listening connection (not from a pool).
	ConnConfig *pgx.ConnConfig
	// Resolver receives every notification.
	Resolver *Resolver
	// MinBackoff and MaxBackoff bound the reconnect delay. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// OnListening, when set, is called each time LISTEN is in place (after a purge, on reconnect).
	OnListening func()
	// HealthInterval is how long the listener waits for a notification before it checks that
	// its connection is alive (SELECT 1), so a half-open connection is found in about that time
	// instead of TCP keepalive's minutes. Default 15s.
	HealthInterval time.Duration
	// HealthyAfter is how long a LISTEN must have stayed in place for the next loss to be
	// retried at MinBackoff again (the backoff doubles only over losses in quick succession).
	// Default 30s.
	HealthyAfter time.Duration
	// OnLost, when set, is called each time the connection is lost (caching is off from then
	// until the next OnListening), with the delay before the next attempt.
	OnLost func(err error, backoff time.Duration)
	Logger *slog.Logger
}

// Listen keeps a LISTEN on registry.Channel open until ctx ends, applying each notification to the
// resolver. The resolver caches only while a LISTEN is in place: caching is turned off (and the
// caches purged) as soon as the connection is lost, so every request reads the registry until the
// new LISTEN is in place, and turned on again (purged once more: notifications sent while
// disconnected are lost) before OnListening. The reconnect delay doubles from MinBackoff to
// MaxBackoff over losses in quick succession and starts again at MinBackoff after a LISTEN that
// stayed up HealthyAfter. It returns ctx.Err() when ctx ends.
func Listen(ctx context.Context, cfg ListenerConfig) error {
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, 100*time.Millisecond)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 5*time.Second)
	cfg.HealthInterval = cmp.Or(cfg.HealthInterval, 15*time.Second)
	cfg.HealthyAfter = cmp.Or(cfg.HealthyAfter, 30*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnConfig == nil || cfg.Resolver == nil {
		return errors.New("routing: ListenerConfig needs ConnConfig and Resolver")
	}
	backoff := cfg.MinBackoff
	for {
		listened, err := listenOnce(ctx, cfg)
		// Until we listen again nothing tells us about changes: stop trusting the caches now.
		cfg.Resolver.SetCaching(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if listened >= cfg.HealthyAfter {
			backoff = cfg.MinBackoff
		}
		cfg.Logger.WarnContext(ctx, "registry listener lost its connection; caching off until it is back",
			slog.String("error", err.Error()), slog.Duration("backoff", backoff))
		if cfg.OnLost != nil {
			cfg.OnLost(err, backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}

// listenOnce listens until the connection fails, and returns how long LISTEN was in place.
func listenOnce(ctx context.Context, cfg ListenerConfig) (time.Duration, error) {
	cc := cfg.ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = ListenerApplicationName // findable in pg_stat_activity
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{registry.Channel}.Sanitize()); err != nil {
		return 0, err
	}
	since := time.Now()
	cfg.Resolver.SetCaching(true)
	if cfg.OnListening != nil {
		cfg.OnListening()
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, cfg.HealthInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && wctx.Err() != nil {
			// Quiet for a while: make sure the connection still carries notifications.
			pctx, cancel := context.WithTimeout(ctx, cfg.HealthInterval)
			_, err = conn.Exec(pctx, "SELECT 1")
			cancel()
			if err != nil {
				return time.Since(since), err
			}
			continue
		}
		if err != nil {
			return time.Since(since), err
		}
		var note registry.Notification
		if err := json.Unmarshal([]byte(n.Payload), &note); err != nil {
			// Unknown payload: be safe and forget everything.
			cfg.Logger.WarnContext(ctx, "unreadable registry notification; purging", slog.String("payload", n.Payload))
			cfg.Resolver.Purge()
			continue
		}
		cfg.Resolver.Apply(note)
	}
}
