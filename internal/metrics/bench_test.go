package metrics_test

import (
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/metrics"
)

// BenchmarkObserve is the cost per record change of the shared
// observation point feeding Prometheus, beside the same Tracker feeding
// the EMF Writer (to a discarding writer): the ratio of the two says what
// Prometheus adds to what AWS workers already pay.
// go test -run '^$' -bench Observe -benchtime 200000x ./internal/metrics/
func BenchmarkObserve(b *testing.B) {
	t0 := time.Now()
	life := func(i int) []*job.Record {
		r := job.New("in", "k/"+strconv.Itoa(i), "", "e", 100, 3, t0)
		q := *r
		r.Claim("v/1", "t", t0.Add(time.Second), time.Minute, false)
		run := *r
		run.Attempts = append([]job.Attempt(nil), r.Attempts...)
		r.Timings = job.Timings{FetchMS: 1, ProcessMS: 2, UploadMS: 3}
		r.Succeed(t0.Add(2*time.Second), []job.Output{{Key: "o", Size: 10}})
		return []*job.Record{&q, &run, r}
	}
	lives := make([][]*job.Record, 1000)
	for i := range lives {
		lives[i] = life(i)
	}
	for _, tc := range []struct {
		name string
		obs  jobmetrics.Observer
	}{
		{"prometheus", metrics.New()},
		{"emf", jobmetrics.New(io.Discard, "state")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr := jobmetrics.NewTracker(tc.obs)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, r := range lives[i%len(lives)] {
					tr.Changed(r)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(3*b.N), "ns/change")
		})
	}
}
