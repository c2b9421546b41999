package memory

import (
	"math"

	lru "github.com/hashicorp/golang-lru/v2"
)

// efPoint is the ef_search measured to reach a recall@10 target for a tenant of refSize leaf
// chunks, per tier (BenchmarkRecallCalibration in internal/httpapi; docs/benchmarks.md).
type efPoint struct {
	target         float64
	schema, shared int
}

// efRefSize is the tenant size of the calibration.
const efRefSize = 20000

var efTable = []efPoint{
	{0.50, 10, 10},
	{0.80, 16, 24},
	{0.90, 24, 40},
	{0.95, 40, 64},
	{0.98, 80, 128},
	{0.99, 128, 200},
	{0.999, 400, 600},
}

// EfSearchFor returns the hnsw.ef_search that vector search uses to reach a recall@10 target
// (0.5 to 1, against an exact scan) for a tenant of size leaf chunks, in the shared tier (one
// graph for all tenants, filtered by owner with an iterative scan) or in its own index. It
// interpolates the calibration table between targets and grows with the square root of the size
// beyond the calibration size. Targets of 1 are served by the exact scan, not by this.
func EfSearchFor(shared bool, size int64, target float64) int {
	lo, hi := efTable[0], efTable[len(efTable)-1]
	for i := 1; i < len(efTable); i++ {
		if target <= efTable[i].target {
			lo, hi = efTable[i-1], efTable[i]
			break
		}
		lo, hi = efTable[i], efTable[i]
	}
	pick := func(p efPoint) float64 {
		if shared {
			return float64(p.shared)
		}
		return float64(p.schema)
	}
	ef := pick(lo)
	if hi.target > lo.target {
		f := (target - lo.target) / (hi.target - lo.target)
		ef += f * (pick(hi) - pick(lo))
	}
	if size > efRefSize {
		ef *= math.Sqrt(float64(size) / efRefSize)
	}
	return min(max(int(math.Ceil(ef)), 10), 1000)
}

// sizeCache remembers each tenant's number of leaf chunks, which decides between the exact scan
// and the HNSW walk. Every search reads the current count in its own round trip and stores it
// here for the next one, so only a tenant's first search pays a round trip to learn it.
type sizeCache struct {
	c *lru.Cache[string, int64] // safe for concurrent use
}

func newSizeCache() *sizeCache {
	c, _ := lru.New[string, int64](100_000)
	return &sizeCache{c: c}
}

func sizeKey(s Scope) string { return s.Schema + "\x00" + s.OwnerID }

func (c *sizeCache) get(s Scope) (int64, bool) { return c.c.Get(sizeKey(s)) }

func (c *sizeCache) put(s Scope, n int64) { c.c.Add(sizeKey(s), n) }
