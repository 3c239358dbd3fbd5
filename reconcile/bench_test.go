package reconcile

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// resyncTickCost returns the median cost of one resync tick with records tenants scheduled
// and changed of them due, over rounds rounds.
func resyncTickCost(records, changed, rounds int) time.Duration {
	c := New(Config{Resync: time.Minute})
	now := time.Unix(1e9, 0)
	for i := range records {
		c.Schedule(fmt.Sprintf("t%05d", i), now.Add(time.Hour))
	}
	costs := make([]time.Duration, 0, rounds)
	for r := range rounds {
		for i := range changed {
			// A tenant whose pass is due now (as a changed one would be); it is put back an hour
			// later, as a completed pass reschedules it.
			c.Schedule(fmt.Sprintf("t%05d", (r*changed+i)%records), now)
		}
		start := time.Now()
		n := c.ResyncTick(now)
		costs = append(costs, time.Since(start))
		if n != changed {
			panic(fmt.Sprintf("tick enqueued %d, want %d", n, changed))
		}
		for i := range changed {
			name := fmt.Sprintf("t%05d", (r*changed+i)%records)
			c.mu.Lock()
			delete(c.queued, name)
			c.mu.Unlock()
			select {
			case <-c.queue:
			default:
			}
			c.Schedule(name, now.Add(time.Hour))
		}
	}
	sort.Slice(costs, func(i, j int) bool { return costs[i] < costs[j] })
	return costs[len(costs)/2]
}

// BenchmarkResyncTick compares a resync tick with 1,000 tenant records against one with 10, both with the same
// number of changed (due) tenants: the tick's cost follows the changes, not the records (goal: at most 1.2x per
// changed tenant). Reported as the median of many ticks, per changed tenant.
func BenchmarkResyncTick(b *testing.B) {
	for _, changed := range []int{1, 10} {
		b.Run(fmt.Sprintf("changed=%d", changed), func(b *testing.B) {
			var big, small time.Duration
			for range b.N {
				big += resyncTickCost(1000, changed, 201)
				small += resyncTickCost(10, changed, 201)
			}
			b.ReportMetric(float64(big.Nanoseconds())/float64(b.N)/float64(changed), "ns/changed@1000")
			b.ReportMetric(float64(small.Nanoseconds())/float64(b.N)/float64(changed), "ns/changed@10")
			b.ReportMetric(float64(big)/float64(small), "ratio")
		})
	}
}
