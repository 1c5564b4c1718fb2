package jobmetrics_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
)

// extract parses every line of out as CloudWatch does; every line must
// be EMF.
func extract(t *testing.T, out string) [][]emf.Datum {
	t.Helper()
	var lines [][]emf.Datum
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		d, err := emf.Extract([]byte(l))
		if err != nil {
			t.Fatalf("line CloudWatch would not read: %v\n%s", err, l)
		}
		lines = append(lines, d)
	}
	return lines
}

// summary is "<name>=<values> <unit>" per data point, per line.
func summary(t *testing.T, lines [][]emf.Datum) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		var s []string
		for _, d := range l {
			if d.Namespace != "Conveyor" || !cmp.Equal(d.Dimensions, map[string]string{"StateBucket": "st"}) {
				t.Errorf("%s in %s with %v: want namespace Conveyor, dimension StateBucket=st", d.Name, d.Namespace, d.Dimensions)
			}
			var vs []string
			for _, v := range d.Values {
				vs = append(vs, strconv.FormatFloat(v, 'f', -1, 64))
			}
			s = append(s, d.Name+"="+strings.Join(vs, ",")+" "+d.Unit)
		}
		out = append(out, strings.Join(s, ", "))
	}
	return out
}

func TestChangesBecomeMetrics(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := jobmetrics.New(&out, "st")
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := job.New("in", "k", "", "e", 1, 2, t0)
	snap := func() *job.Record { c := *r; c.Attempts = append([]job.Attempt(nil), r.Attempts...); return &c }
	w.Changed(snap()) // created
	r.Claim("v/1", "t1", t0.Add(3*time.Second), time.Minute, false)
	w.Changed(snap()) // first claim: queue age 3s
	r.Renew("t1", t0.Add(10*time.Second), time.Minute)
	w.Changed(snap()) // heartbeat: nothing
	r.Fail(t0.Add(13*time.Second), nil, "boom", false, time.Second)
	w.Changed(snap()) // attempt 1 took 10s
	r.Claim("v/1", "t2", t0.Add(20*time.Second), time.Minute, false)
	w.Changed(snap()) // a second claim: no queue age
	r.Fail(t0.Add(25*time.Second), nil, "boom", false, time.Second)
	w.Changed(snap()) // attempt 2 took 5s, dead

	got := summary(t, extract(t, out.String()))
	want := []string{
		"JobsCreated=1 Count",
		"QueueAge=3000 Milliseconds",
		"AttemptDuration=10000 Milliseconds",
		"AttemptDuration=5000 Milliseconds, JobsDead=1 Count",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s\n%s", diff, out.String())
	}
}
