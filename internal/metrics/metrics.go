package metrics

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/version"
)

// Namespace prefixes every metric name.
const Namespace = "conveyor"

// Buckets of the histograms, in seconds: jobs take from milliseconds to
// hours, reconcile passes milliseconds to their budget, snapshots
// seconds to hours.
var (
	jobBuckets       = prometheus.ExponentialBuckets(0.01, 4, 11) // 10ms .. ~2.9h
	reconcileBuckets = prometheus.ExponentialBuckets(0.005, 4, 9) // 5ms .. ~5.5min
	snapshotBuckets  = prometheus.ExponentialBuckets(0.5, 4, 9)   // 0.5s .. ~9h
)

// phases are the values of the phase label, in the order of an attempt.
var phases = []string{"fetch", "process", "upload"}

// Metrics holds the registry and every Conveyor metric in it. Its
// methods are safe for concurrent use; a nil *Metrics does nothing, so
// callers need not check whether metrics are on.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	created     prometheus.Counter
	transitions *prometheus.CounterVec
	unfinished  prometheus.Gauge
	attempts    prometheus.Counter
	retries     prometheus.Counter
	attemptDur  *prometheus.HistogramVec
	queueWait   prometheus.Histogram
	phaseDur    *prometheus.HistogramVec
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter

	dispatches *prometheus.CounterVec

	passes           prometheus.Counter
	passFailures     prometheus.Counter
	passLimited      prometheus.Counter
	passDur          prometheus.Histogram
	passLastSuccess  prometheus.Gauge
	redispatched     prometheus.Counter
	lostEvents       prometheus.Counter
	reconcileMu      sync.Mutex
	oldestUnfinished time.Time

	snapshotRuns        *prometheus.CounterVec
	snapshotDur         prometheus.Histogram
	snapshotLastSuccess prometheus.Gauge
}

// New returns the metrics in a new registry of their own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now}
	f := factory{m.reg}
	m.created = f.counter("jobs_created_total", "Job records created (one per input object version).")
	m.transitions = f.counterVec("job_transitions_total", "Job state changes, by the state entered (a new attempt counts as entering running again).", "state")
	for _, s := range job.States {
		m.transitions.WithLabelValues(string(s)) // every state shows, at 0, from the start
	}
	m.unfinished = f.gauge("jobs_unfinished", "Jobs not yet succeeded, dead or superseded: exact after each complete reconcile pass, following creations and ends in between.")
	f.gaugeFunc("oldest_unfinished_job_age_seconds", "Age of the oldest unfinished job the last reconcile pass read (0 when none).", m.oldestAge)
	m.attempts = f.counter("job_attempts_total", "Attempts started (claims of a job by a worker).")
	m.retries = f.counter("job_retries_total", "Attempts started after a failed one.")
	m.attemptDur = f.histogramVec("job_attempt_duration_seconds", "How long an attempt ran, claim to outcome, by the state it left the job in.", jobBuckets, "outcome")
	for _, s := range []job.State{job.Succeeded, job.Retrying, job.Dead, job.Superseded} {
		m.attemptDur.WithLabelValues(string(s))
	}
	m.queueWait = f.histogram("job_queue_wait_seconds", "How long a new job waited for its first attempt (created to started).", jobBuckets)
	m.phaseDur = f.histogramVec("job_phase_duration_seconds", "How long a succeeded attempt spent in each phase: fetch (input to the volume), process, upload (outputs); in milliseconds' resolution.", jobBuckets, "phase")
	for _, p := range phases {
		m.phaseDur.WithLabelValues(p)
	}
	m.bytesIn = f.counter("job_input_bytes_total", "Bytes of the inputs of succeeded jobs.")
	m.bytesOut = f.counter("job_output_bytes_total", "Bytes of the outputs succeeded jobs published.")

	m.dispatches = f.counterVec("dispatches_total", "Job IDs handed to the dispatcher, by result: ok, full (every worker slot taken; the job stays queued), error.", "result")
	for _, r := range []string{"ok", "full", "error"} {
		m.dispatches.WithLabelValues(r)
	}

	m.passes = f.counter("reconcile_passes_total", "Reconcile passes run.")
	m.passFailures = f.counter("reconcile_pass_failures_total", "Reconcile passes that met an error (the next pass tries again).")
	m.passLimited = f.counter("reconcile_limited_passes_total", "Reconcile passes that stopped at their budget (the next pass resumes).")
	m.passDur = f.histogram("reconcile_pass_duration_seconds", "How long a reconcile pass took.", reconcileBuckets)
	m.passLastSuccess = f.gauge("reconcile_last_success_timestamp_seconds", "When the last reconcile pass without an error ended (Unix time; 0 before the first).")
	m.redispatched = f.counter("reconcile_redispatched_total", "Unfinished jobs the reconciler dispatched again.")
	m.lostEvents = f.counter("reconcile_lost_events_total", "Input objects the reconciler found without a job (their event was lost) and submitted.")

	m.snapshotRuns = f.counterVec("snapshot_runs_total", "Scheduled snapshot runs (snapshot, retention, prune when due), by result: succeeded, failed.", "result")
	for _, r := range []string{"succeeded", "failed"} {
		m.snapshotRuns.WithLabelValues(r)
	}
	m.snapshotDur = f.histogram("snapshot_run_duration_seconds", "How long a scheduled snapshot run took.", snapshotBuckets)
	m.snapshotLastSuccess = f.gauge("snapshot_last_success_timestamp_seconds", "When the last scheduled snapshot run succeeded (Unix time; 0 before the first).")

	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info", Help: "Always 1; the labels name the running build."}, []string{"version", "revision", "goversion"})
	bi.WithLabelValues(version.Version, version.Commit(), runtime.Version()).Set(1)
	m.reg.MustRegister(bi)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry the metrics are in, for tests and for
// collectors of other parts.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
// A nil *Metrics has none (nil).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return nil
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

var _ jobmetrics.Observer = (*Metrics)(nil)

// Observe counts one job record change (see jobmetrics.Tracker).
func (m *Metrics) Observe(o jobmetrics.Observation) {
	if m == nil {
		return
	}
	m.transitions.WithLabelValues(string(o.State)).Inc()
	if o.Created {
		m.created.Inc()
	}
	if o.State == job.Queued && !o.Seen {
		m.unfinished.Inc() // a new job, or a finished one put back (a retry from the dashboard)
	}
	if o.State.Terminal() && o.Seen {
		m.unfinished.Dec()
	}
	if o.Claimed {
		m.attempts.Inc()
	}
	if o.Retry {
		m.retries.Inc()
	}
	if o.HasQueueWait {
		m.queueWait.Observe(o.QueueWait.Seconds())
	}
	if o.AttemptEnded {
		m.attemptDur.WithLabelValues(string(o.State)).Observe(o.AttemptDuration.Seconds())
		// Only a succeeded attempt ran every phase: a failed one's zero
		// would say "instant", not "never reached".
		if o.State == job.Succeeded {
			for i, ms := range []int64{o.Phases.FetchMS, o.Phases.ProcessMS, o.Phases.UploadMS} {
				m.phaseDur.WithLabelValues(phases[i]).Observe(float64(ms) / 1000)
			}
		}
	}
	m.bytesIn.Add(float64(max(o.BytesIn, 0)))
	m.bytesOut.Add(float64(max(o.BytesOut, 0)))
}

// Reconciled counts one reconcile pass (an orchestrator.Reconciler's
// OnReport). A pass that read every unfinished job sets the gauge of
// unfinished jobs: this is what makes it right after a restart.
func (m *Metrics) Reconciled(r orchestrator.Report) {
	if m == nil {
		return
	}
	m.passes.Inc()
	m.passDur.Observe(r.Duration.Seconds())
	if r.Limited {
		m.passLimited.Inc()
	}
	m.redispatched.Add(float64(r.Unfinished))
	m.lostEvents.Add(float64(r.Missing))
	if failed(r) {
		m.passFailures.Inc()
	} else {
		m.passLastSuccess.Set(float64(m.now().UnixNano()) / 1e9)
	}
	if r.ActiveCursorEnd {
		m.unfinished.Set(float64(r.Active))
		m.reconcileMu.Lock()
		m.oldestUnfinished = r.OldestUnfinished
		m.reconcileMu.Unlock()
	}
}

// failed: a pass that met an error, other than running out of its own
// budget (that is Limited, and the next pass resumes).
func failed(r orchestrator.Report) bool {
	for _, err := range r.Errors {
		if err != nil && !(r.Limited && errors.Is(err, context.DeadlineExceeded)) {
			return true
		}
	}
	return false
}

func (m *Metrics) oldestAge() float64 {
	m.reconcileMu.Lock()
	oldest := m.oldestUnfinished
	m.reconcileMu.Unlock()
	if oldest.IsZero() {
		return 0
	}
	return max(m.now().Sub(oldest).Seconds(), 0)
}

// SnapshotRun counts one scheduled snapshot run that took d and ended
// with err (nil: succeeded).
func (m *Metrics) SnapshotRun(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.snapshotDur.Observe(d.Seconds())
	if err != nil {
		m.snapshotRuns.WithLabelValues("failed").Inc()
		return
	}
	m.snapshotRuns.WithLabelValues("succeeded").Inc()
	m.snapshotLastSuccess.Set(float64(m.now().UnixNano()) / 1e9)
}

// Dispatcher returns d counting every Dispatch in conveyor_dispatches_total.
func (m *Metrics) Dispatcher(d dispatch.Dispatcher) dispatch.Dispatcher {
	if m == nil {
		return d
	}
	return &countingDispatcher{Dispatcher: d, m: m}
}

type countingDispatcher struct {
	dispatch.Dispatcher
	m *Metrics
}

func (c *countingDispatcher) Dispatch(ctx context.Context, id string) (string, error) {
	ref, err := c.Dispatcher.Dispatch(ctx, id)
	switch {
	case err == nil:
		c.m.dispatches.WithLabelValues("ok").Inc()
	case errors.Is(err, dispatch.ErrFull):
		c.m.dispatches.WithLabelValues("full").Inc()
	default:
		c.m.dispatches.WithLabelValues("error").Inc()
	}
	return ref, err
}

// factory registers metrics under Namespace.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeFunc(name, help string, fn func() float64) {
	f.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, fn))
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
