package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"

	"github.com/conveyorhq/conveyor/internal/cwlogs"
	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// observers are what watches a worker's record changes besides the
// worker itself: job events on EventBridge (events.bus) and job metrics
// in embedded metric format (metrics.emf); logSink sends its logs to
// CloudWatch Logs (logs.group). Wired here, once, for `worker run`.
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
		ac, err := serviceConfig(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("events.bus: %w", err)
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

// serviceConfig is the AWS configuration of the services besides S3 a
// worker uses: the usual chain (the instance role on EC2) in s3.region;
// AWS_ENDPOINT_URL_<SERVICE> points a service elsewhere.
func serviceConfig(ctx context.Context, c FileConfig) (aws.Config, error) {
	ac, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.S3.Region))
	if err != nil {
		return ac, fmt.Errorf("load AWS configuration: %w", err)
	}
	return ac, nil
}

// logSink is where logs.group sends each attempt's log; nil when unset.
func (c FileConfig) logSink(ctx context.Context) (worker.LogSink, error) {
	if c.Logs.Group == "" {
		return nil, nil
	}
	ac, err := serviceConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("logs.group: %w", err)
	}
	return &cwlogs.Sink{Client: cloudwatchlogs.NewFromConfig(ac), Group: c.Logs.Group}, nil
}
