package embed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
)

// Provider turns texts into vectors of one fixed dimension.
//
// Implementations are safe for concurrent use by multiple goroutines.
type Provider interface {
	// Name identifies the vector space, e.g. "builtin-hash-384" or "openai:text-embedding-3-small".
	// Vectors from providers with different names (or dimensions) must not be compared.
	Name() string
	// Dimension is the length of every vector Embed returns.
	Dimension() int
	// Embed returns one vector per text, in the order of texts. An empty texts slice yields an
	// empty result and no error.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

// InProcess reports whether p computes its vectors in this process (on this machine's CPU) rather
// than asking a service: a provider says so with a method InProcess() bool. The engine splits an
// in-process provider's work into slices so that other tenants' requests can go between them.
func InProcess(p Provider) bool {
	ip, ok := p.(interface{ InProcess() bool })
	return ok && ip.InProcess()
}

// Provider kinds accepted by [Config].Kind.
const (
	// KindBuiltin selects the offline feature-hashing embedder ([Builtin]).
	KindBuiltin = "builtin"
	// KindOpenAI selects the OpenAI-compatible HTTP embedder ([OpenAI]).
	KindOpenAI = "openai"
)

// Config selects and configures a [Provider] for [New].
type Config struct {
	// Kind is KindBuiltin or KindOpenAI. Default: KindBuiltin, so a server works offline.
	Kind string
	// Dimension is the vector length. For KindBuiltin it defaults to DefaultBuiltinDimension and
	// must lie in [MinBuiltinDimension, MaxBuiltinDimension]. For KindOpenAI it is copied into
	// OpenAI.Dimension when that is zero; setting both to different values is an error.
	Dimension int
	// OpenAI configures the KindOpenAI provider; it is ignored for KindBuiltin.
	OpenAI OpenAIConfig
}

// WithDefaults returns a copy of c with unset fields replaced by their defaults. It leaves
// OpenAI to [OpenAIConfig.WithDefaults], which [NewOpenAI] applies.
func (c Config) WithDefaults() Config {
	c.Kind = cmp.Or(c.Kind, KindBuiltin)
	if c.Kind == KindBuiltin {
		c.Dimension = cmp.Or(c.Dimension, DefaultBuiltinDimension)
	}
	return c
}

// New builds the provider that cfg selects, after applying defaults and validating.
func New(cfg Config) (Provider, error) {
	cfg = cfg.WithDefaults()
	switch cfg.Kind {
	case KindBuiltin:
		return NewBuiltin(cfg.Dimension)
	case KindOpenAI:
		oc := cfg.OpenAI
		switch {
		case oc.Dimension == 0:
			oc.Dimension = cfg.Dimension
		case cfg.Dimension != 0 && cfg.Dimension != oc.Dimension:
			return nil, fmt.Errorf("embed: Dimension (%d) and OpenAI.Dimension (%d) differ", cfg.Dimension, oc.Dimension)
		}
		return NewOpenAI(oc)
	default:
		return nil, fmt.Errorf("embed: Kind must be %q or %q, got %q", KindBuiltin, KindOpenAI, cfg.Kind)
	}
}

// Sentinel errors. Errors returned by providers wrap at most one of them; match with errors.Is.
// ErrRateLimited and ErrUnavailable are transient (see [IsTransient]); the others are permanent.
var (
	// ErrRateLimited means the provider answered 429 Too Many Requests and the retries were
	// exhausted, or it asked (Retry-After) for a longer pause than OpenAIConfig.MaxBackoff.
	// The error is an [*APIError] whose RetryAfter, when non-zero, says when to try again.
	ErrRateLimited = errors.New("embed: rate limited")
	// ErrUnavailable means the provider could not be reached or failed on its side: a network
	// error, a per-request timeout, 408 or a 5xx status, after the retries were exhausted.
	ErrUnavailable = errors.New("embed: provider unavailable")
	// ErrProvider means the provider rejected the request permanently: a 4xx status other than
	// 408 and 429, or a 429 that reports an exhausted quota. Retrying the same input will not help.
	ErrProvider = errors.New("embed: provider rejected the request")
	// ErrBadResponse means a 2xx response could not be used: invalid JSON, a wrong number of
	// items, a missing, duplicate or out-of-range index, or a NaN or infinite value.
	ErrBadResponse = errors.New("embed: bad response from provider")
	// ErrDimensionMismatch means the provider returned a vector whose length differs from the
	// configured dimension, which usually means the model and the configured dimension disagree.
	ErrDimensionMismatch = errors.New("embed: dimension mismatch")
)

// IsTransient reports whether err is worth retrying later with the same input: it wraps
// [ErrRateLimited] or [ErrUnavailable]. Errors caused by the caller's context (cancellation or
// deadline) are not transient: the caller chose to stop, and decides for itself.
func IsTransient(err error) bool {
	return errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnavailable)
}

// Normalize scales v in place to unit Euclidean length and returns its length before scaling.
// A zero vector, or one that contains NaN or an infinity, is left unchanged. The sum of squares
// is accumulated in float64 with every step rounded explicitly, so the result is bit-for-bit
// identical on every platform.
func Normalize(v []float32) float64 {
	var ss float64
	for _, x := range v {
		f := float64(x)
		ss = float64(ss + float64(f*f)) // the conversions forbid fused multiply-add
	}
	norm := math.Sqrt(ss)
	if norm == 0 || math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm
	}
	for i, x := range v {
		v[i] = float32(float64(x) / norm)
	}
	return norm
}
