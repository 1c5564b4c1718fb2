package notify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/notify"
)

// BenchmarkChanged is the cost the pipeline pays per job state change
// (the hook's whole work): with a receiver that answers at once, and
// with one that never answers (its queue full, every change dropped). The
// two should be close: the receiver's speed must not reach the caller.
// Compare with: go test -run '^$' -bench Changed -benchtime 200000x ./internal/notify/
func BenchmarkChanged(b *testing.B) {
	recs := make([]*job.Record, 1000)
	for i := range recs {
		recs[i] = rec("bench/"+strconv.Itoa(i)+".txt", job.Succeeded, 1)
	}
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request, chan struct{})
	}{
		{"fast-receiver", func(w http.ResponseWriter, _ *http.Request, _ chan struct{}) { w.WriteHeader(http.StatusNoContent) }},
		{"stuck-receiver", func(w http.ResponseWriter, _ *http.Request, hang chan struct{}) { <-hang }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			hang := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tc.answer(w, r, hang) }))
			n, err := notify.New(notify.Config{Webhooks: []notify.Webhook{{URL: srv.URL, Secret: secret}}, QueueSize: 100, DrainTimeout: 1})
			if err != nil {
				b.Fatal(err)
			}
			n.Start(context.Background())
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := recs[i%len(recs)]
				r.Attempt = i // a new change each time, never a heartbeat
				n.Changed(r)
			}
			b.StopTimer()
			n.Stop()
			close(hang)
			srv.Close()
		})
	}
}
