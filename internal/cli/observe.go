package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"

	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
)

// observers are what watches a worker's record changes besides the
// worker itself: job events on EventBridge (events.bus) and job metrics
// in embedded metric format (metrics.emf). Wired here, once, for
// `worker run`.
type observers struct {
	events  *jobevents.Emitter
	metrics *jobmetrics.Writer
}

// observersFlushTimeout bounds the wait for job events when a command ends.
const observersFlushTimeout = 5 * time.Second

// newObservers builds what c configures; metric lines go to out, notes
// to errw.
func (c FileConfig) newObservers(ctx context.Context, out, errw io.Writer) (*observers, error) {
	obs := &observers{}
	if c.Metrics.EMF {
		obs.metrics = jobmetrics.New(out, c.Buckets.State)
	}
	if c.Events.Bus != "" {
		// The usual AWS chain (the instance role on EC2) and s3.region;
		// AWS_ENDPOINT_URL_EVENTBRIDGE points it elsewhere.
		ac, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.S3.Region))
		if err != nil {
			return nil, fmt.Errorf("events.bus: load AWS configuration: %w", err)
		}
		logf := func(format string, args ...any) {
			fmt.Fprintf(errw, time.Now().Format("15:04:05 ")+format+"\n", args...)
		}
		obs.events = jobevents.NewEmitter(&jobevents.EventBridge{Client: eventbridge.NewFromConfig(ac), Bus: c.Events.Bus}, c.Buckets.Output, logf)
	}
	return obs, nil
}

// changed is the worker's OnChange: it returns at once.
func (o *observers) changed(r *job.Record) {
	o.events.Changed(r)
	o.metrics.Changed(r)
}

// close waits, a bounded time, for what is still being published.
func (o *observers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), observersFlushTimeout)
	defer cancel()
	o.events.Flush(ctx)
	if o.events != nil && o.events.Failed() > 0 {
		o.metrics.Write([]emf.Metric{{Name: jobmetrics.EventsFailed, Unit: emf.Count, Value: float64(o.events.Failed())}}, nil)
	}
}
