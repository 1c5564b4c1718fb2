package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// OutcomeBadRecord is the outcome logged for a record that could not be
// parsed, and OutcomeFailed for one whose job could not be recorded or
// dispatched; the others are orchestrator.Outcome values.
const (
	OutcomeBadRecord = "bad_record"
	OutcomeFailed    = "failed"
)

// Handler is the function's handler, for either role. It is safe for
// concurrent use, though Lambda invokes one at a time per execution
// environment.
type Handler struct {
	orch *orchestrator.Orchestrator
	log  *slog.Logger
	out  io.Writer
	// Role selects what Handle does (see Handle); New sets RoleOrchestrator.
	Role Role
	// Reconciler runs, in the reconciler role, on a scheduled invocation
	// (an EventBridge schedule): input objects whose event was lost get
	// their job, and unfinished jobs whose lease lapsed are dispatched again.
	Reconciler *orchestrator.Reconciler
	// Pass runs one reconciliation within ctx's deadline; nil runs
	// Reconciler.Reconcile. Tests replace it.
	Pass func(ctx context.Context) (orchestrator.Report, error)
	// Margin is how long before the invocation's deadline a reconciliation
	// is told to stop, so its report and metrics are written before Lambda
	// ends the invocation; DefaultReconcileMargin when zero.
	Margin time.Duration
	// Function names the function in metrics (the "Function" dimension);
	// NewFromEnv sets AWS_LAMBDA_FUNCTION_NAME.
	Function string
	// Events, if set, publishes the state changes the orchestrator makes
	// (its OnChange); every invocation flushes it before returning, since
	// Lambda freezes the environment in between.
	Events *jobevents.Emitter
	// Metrics, if set, writes job metrics in embedded metric format to
	// the log: the orchestrator's changes (its OnChange), each
	// invocation's failed dispatches and failed events, and each
	// reconcile pass's backlog.
	Metrics *jobmetrics.Writer

	eventsFailed atomic.Int64 // Events.Failed() as last reported
}

// eventsFlushTimeout bounds the wait for an invocation's job events.
const eventsFlushTimeout = 3 * time.Second

// flushEvents waits for the invocation's job events, at best effort: a
// bus that does not answer costs at most eventsFlushTimeout.
func (h *Handler) flushEvents(ctx context.Context) {
	if h.Events == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventsFlushTimeout)
	defer cancel()
	if err := h.Events.Flush(fctx); err != nil {
		h.log.WarnContext(ctx, "job events not all published before the invocation ended", "error", err.Error())
	}
	if failed := h.Events.Failed(); failed > h.eventsFailed.Load() {
		h.metrics([]emf.Metric{{Name: jobmetrics.EventsFailed, Unit: emf.Count, Value: float64(failed - h.eventsFailed.Swap(failed))}}, "job events not published")
	}
}

// metrics writes one line of job metrics, if Metrics is set.
func (h *Handler) metrics(ms []emf.Metric, msg string) {
	if err := h.Metrics.Write(ms, map[string]any{"msg": msg, "function": h.function()}); err != nil {
		h.log.Error("metrics", "error", err.Error())
	}
}

// New returns an orchestrator-role handler that submits events to o and
// writes one JSON line per record outcome to out (stdout in Lambda:
// CloudWatch Logs). Set Role to RoleReconciler for the reconciler function.
func New(o *orchestrator.Orchestrator, out io.Writer) *Handler {
	return &Handler{
		orch: o, log: slog.New(slog.NewJSONHandler(out, nil)), out: out,
		Role: RoleOrchestrator, Reconciler: orchestrator.NewReconciler(o, 0),
	}
}

// Response is what an invocation returns: a count per outcome and each
// record's outcome, in event order; or, in the reconciler role, what the
// pass did.
type Response struct {
	Created    int            `json:"created"`
	Duplicate  int            `json:"duplicate"`
	Redispatch int            `json:"redispatch"`
	Filtered   int            `json:"filtered"`
	BadRecords int            `json:"bad_records"`
	Failed     int            `json:"failed"`
	Held       int            `json:"held,omitempty"`    // recorded but not sent: every worker's slots were taken (the reconciler sends them)
	Ignored    string         `json:"ignored,omitempty"` // why a whole event was ignored (s3:TestEvent, a schedule's)
	Reconciled *Reconciled    `json:"reconciled,omitempty"`
	Records    []RecordResult `json:"records,omitempty"`
}

// isScheduled reports whether event is an EventBridge schedule's.
func isScheduled(event json.RawMessage) bool {
	var probe struct {
		DetailType string `json:"detail-type"`
		Source     string `json:"source"`
	}
	return json.Unmarshal(event, &probe) == nil && probe.DetailType == "Scheduled Event" && probe.Source == "aws.events"
}

// IgnoredSchedule is the reason an orchestrator-role handler gives for
// ignoring a scheduled event.
const IgnoredSchedule = "scheduled event: reconciling is the reconciler function's work (" + EnvRole + "=reconciler)"

// RecordResult is one record's outcome.
type RecordResult struct {
	Outcome string `json:"outcome"`
	JobID   string `json:"job_id,omitempty"`
	Bucket  string `json:"bucket,omitempty"`
	Key     string `json:"key,omitempty"`
	Error   string `json:"error,omitempty"`
	Held    bool   `json:"held,omitempty"`
}

// Handle processes one invocation's event, as the handler's Role says.
//
// In the reconciler role, an EventBridge schedule's event runs one
// reconciliation (see HandleScheduled); any other event is an error.
//
// In the orchestrator role: an S3 notification (Records) or an EventBridge
// "Object Created" event becomes jobs; an s3:TestEvent is ignored, and so
// is a schedule's event, with a warning (the reconciler function
// reconciles; failing it would only retry it and park it in the
// dead-letter queue, which holds object events whose jobs may be lost). A
// record that cannot be parsed is logged and skipped; the others go on. It
// returns an error when a job could not be recorded or dispatched, so
// Lambda retries the event (jobs already created are then duplicates and
// start nothing twice) and finally hands it to the function's on-failure
// destination; and when the document has no shape it knows, so that
// misrouted event lands there too.
func (h *Handler) Handle(ctx context.Context, event json.RawMessage) (Response, error) {
	defer h.flushEvents(ctx)
	if h.Role == RoleReconciler {
		return h.HandleScheduled(ctx, event)
	}
	ctx = withInvocation(ctx) // for FailFast
	if isScheduled(event) {
		resp := Response{Ignored: IgnoredSchedule}
		h.log.WarnContext(ctx, "event ignored", "reason", resp.Ignored)
		return resp, nil
	}
	results, err := h.orch.HandleEvent(ctx, event)
	var resp Response
	if len(results) == 0 && err == nil {
		_, _, perr := s3event.Parse(event)
		if errors.Is(perr, s3event.ErrNotObjectCreated) {
			resp.Ignored = "not an object-created event (s3:TestEvent or another kind)"
			h.log.InfoContext(ctx, "event ignored", "reason", resp.Ignored)
		}
		return resp, nil
	}
	if len(results) == 0 {
		h.log.ErrorContext(ctx, "event rejected", "error", err.Error(), "bytes", len(event))
		return resp, fmt.Errorf("unreadable event: %w", err)
	}
	for _, r := range results {
		rr := h.record(ctx, r)
		switch rr.Outcome {
		case string(orchestrator.Created):
			resp.Created++
		case string(orchestrator.Duplicate):
			resp.Duplicate++
		case string(orchestrator.Redispatch):
			resp.Redispatch++
		case string(orchestrator.Filtered):
			resp.Filtered++
		case OutcomeBadRecord:
			resp.BadRecords++
		case OutcomeFailed:
			resp.Failed++
		}
		if rr.Held {
			resp.Held++
		}
		resp.Records = append(resp.Records, rr)
	}
	dispatchFailed := 0
	for _, r := range results {
		if orchestrator.IsDispatchFailure(r.Err) {
			dispatchFailed++
		}
	}
	h.metrics([]emf.Metric{{Name: jobmetrics.DispatchFailed, Unit: emf.Count, Value: float64(dispatchFailed)}}, "invocation")
	if err != nil {
		return resp, fmt.Errorf("%d of %d record(s) failed, the event will be retried: %w", resp.Failed, len(results), err)
	}
	return resp, nil
}

// record logs one result and returns it as the response reports it.
func (h *Handler) record(ctx context.Context, r orchestrator.Result) RecordResult {
	var bad s3event.BadRecord
	if errors.As(r.Err, &bad) {
		h.log.WarnContext(ctx, "record skipped", "outcome", OutcomeBadRecord, "index", bad.Index, "error", bad.Err.Error())
		return RecordResult{Outcome: OutcomeBadRecord, Error: r.Err.Error()}
	}
	rr := RecordResult{Outcome: string(r.Outcome), JobID: r.JobID, Bucket: r.Object.Bucket, Key: r.Object.Key, Held: r.Held}
	attrs := []any{
		"outcome", "", "job_id", r.JobID, "bucket", r.Object.Bucket, "key", r.Object.Key,
		"size", r.Object.Size, "etag", r.Object.ETag, "event", r.Object.EventName,
	}
	if r.Object.VersionID != "" {
		attrs = append(attrs, "version_id", r.Object.VersionID)
	}
	if r.Held {
		attrs = append(attrs, "held", true)
	}
	if r.Err != nil {
		rr.Outcome, rr.Error = OutcomeFailed, r.Err.Error()
		attrs[1] = rr.Outcome
		h.log.ErrorContext(ctx, "record failed", append(attrs, "error", rr.Error)...)
		return rr
	}
	attrs[1] = rr.Outcome
	h.log.InfoContext(ctx, "record", attrs...)
	return rr
}
