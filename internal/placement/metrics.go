package placement

import "github.com/prometheus/client_golang/prometheus"

// Collector exposes a Pools' counters as Prometheus metrics: tenantmem_placement_pools,
// _connections, _budget_in_use, _budget_size, and the counters _budget_waits_total and
// _budget_refused_total. Register it once per Pools.
type Collector struct {
	p                                         *Pools
	pools, conns, inUse, size, waits, refused *prometheus.Desc
}

// NewCollector returns the collector of p.
func NewCollector(p *Pools) *Collector {
	return &Collector{
		p:       p,
		pools:   prometheus.NewDesc("tenantmem_placement_pools", "Open per-database pools (placements' main databases and tenant databases).", nil, nil),
		conns:   prometheus.NewDesc("tenantmem_placement_connections", "Connections of those pools, busy or idle.", nil, nil),
		inUse:   prometheus.NewDesc("tenantmem_placement_budget_in_use", "Slots of the connection budget taken (connections being opened included).", nil, nil),
		size:    prometheus.NewDesc("tenantmem_placement_budget_size", "The connection budget (0: none).", nil, nil),
		waits:   prometheus.NewDesc("tenantmem_placement_budget_waits_total", "New connections that waited for room in the budget.", nil, nil),
		refused: prometheus.NewDesc("tenantmem_placement_budget_refused_total", "New connections that gave up waiting (the request got 503).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pools, c.conns, c.inUse, c.size, c.waits, c.refused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	ch <- prometheus.MustNewConstMetric(c.pools, prometheus.GaugeValue, float64(s.Pools))
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.Conns))
	ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.BudgetInUse))
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(s.Budget))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.BudgetWaits))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.BudgetRefused))
}
