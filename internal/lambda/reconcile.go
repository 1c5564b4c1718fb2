package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// DefaultReconcileMargin is how long before the invocation's deadline a
// reconciliation is told to stop: time to write its metrics and return.
const DefaultReconcileMargin = 10 * time.Second

// Reconciled is what a scheduled reconciliation did.
type Reconciled struct {
	Objects    int `json:"objects"`    // input objects seen
	Missing    int `json:"missing"`    // objects without a job: submitted
	Unfinished int `json:"unfinished"` // unfinished jobs dispatched again
	Superseded int `json:"superseded"` // older versions recorded superseded
	Backlog    int `json:"backlog"`    // unfinished jobs: active markers read
	Held       int `json:"held"`       // due jobs not sent: every worker's slots were taken
	// Limited says the pass stopped at its deadline; the next one resumes.
	Limited bool     `json:"limited,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// HandleScheduled runs one reconciliation for an EventBridge schedule's
// event, within the invocation's deadline less Margin, and writes one
// embedded-metric-format line for it (see metricLine) and one of job
// metrics (backlog). It returns an error only for an event that is not a
// schedule's (a misrouted event). A pass that failed (a part of it that
// did not succeed, not counting work left undone because the deadline
// came) is not an error of the invocation: it is reported by the line's
// ReconcileFailed metric and its error field, and the next scheduled pass
// resumes it. So a failed pass never reaches a retry, an on-failure
// destination or a dead-letter queue, where it would bury the object
// events that really were lost.
func (h *Handler) HandleScheduled(ctx context.Context, event json.RawMessage) (Response, error) {
	if !isScheduled(event) {
		h.log.ErrorContext(ctx, "event refused", "reason", "not a scheduled event", "bytes", len(event))
		return Response{}, errors.New(`the reconciler function handles only EventBridge scheduled events (detail-type "Scheduled Event", source "aws.events"); object events belong to the orchestrator function`)
	}
	ctx = withInvocation(ctx) // for FailFast: one unavailable worker ends the pass's dispatches
	pctx, cancel := h.budget(ctx)
	defer cancel()
	start := time.Now()
	rep, err := h.pass(pctx)
	took := time.Since(start)
	limited := rep.Limited || errors.Is(pctx.Err(), context.DeadlineExceeded)

	rc := &Reconciled{Objects: rep.Objects, Missing: rep.Missing, Unfinished: rep.Unfinished, Superseded: rep.Superseded, Limited: limited,
		Backlog: rep.Active, Held: rep.Held}
	var failures []error
	for _, e := range append(rep.Errors, err) {
		// Work cut off by the budget is not a failure: it is resumed.
		if e == nil || limited && errors.Is(e, context.DeadlineExceeded) {
			continue
		}
		failures = append(failures, e)
		rc.Errors = append(rc.Errors, e.Error())
	}
	h.writeLine(metricLine(time.Now(), h.function(), took, rc))
	// The job metrics of the pass, beside the reconciler's own.
	oldest := 0.0
	if !rep.OldestUnfinished.IsZero() {
		oldest = float64(time.Since(rep.OldestUnfinished).Milliseconds())
	}
	h.metrics([]emf.Metric{
		{Name: jobmetrics.Backlog, Unit: emf.Count, Value: float64(rep.Active)},
		{Name: jobmetrics.OldestUnfinishedAge, Unit: emf.Milliseconds, Value: oldest},
		{Name: jobmetrics.DispatchFailed, Unit: emf.Count, Value: float64(rep.DispatchFailed)},
	}, "reconcile backlog")
	if len(failures) > 0 {
		h.log.ErrorContext(ctx, "reconcile pass failed; the next pass resumes", "errors", len(failures), "error", failures[0].Error())
	}
	return Response{Reconciled: rc}, nil
}

// budget returns ctx with the deadline the pass must stop at: the
// invocation's less Margin, or less half the time left when that is
// shorter (a tiny timeout still gets a pass).
func (h *Handler) budget(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := h.Margin
	if margin <= 0 {
		margin = DefaultReconcileMargin
	}
	if half := time.Until(deadline) / 2; margin > half {
		margin = half
	}
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

func (h *Handler) pass(ctx context.Context) (orchestrator.Report, error) {
	if h.Pass != nil {
		return h.Pass(ctx)
	}
	return h.Reconciler.Reconcile(ctx), nil
}

func (h *Handler) function() string {
	if h.Function != "" {
		return h.Function
	}
	return "conveyor-" + string(RoleReconciler)
}

// writeLine writes one log line in one Write, so it stays whole.
func (h *Handler) writeLine(line []byte) {
	h.out.Write(append(line, '\n'))
}
