package jobevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
)

// EventBridge publishes to an Amazon EventBridge bus with PutEvents. The
// caller needs events:PutEvents on the bus.
type EventBridge struct {
	Client *eventbridge.Client
	// Bus is the event bus's name or ARN; "" is the account's default bus.
	Bus string
	// Source is the events' source; "" is DefaultSource.
	Source string
}

var _ Publisher = (*EventBridge)(nil)

// Publish puts the events, up to 10 per request. Each event's resources
// name the input object (arn:aws:s3:::bucket/key) and its time is the
// record's last change.
func (b *EventBridge) Publish(ctx context.Context, details []Detail) error {
	source := b.Source
	if source == "" {
		source = DefaultSource
	}
	var errs []error
	for len(details) > 0 {
		n := min(len(details), batchSize)
		entries := make([]types.PutEventsRequestEntry, 0, n)
		for _, d := range details[:n] {
			body, err := json.Marshal(d)
			if err != nil {
				return err
			}
			e := types.PutEventsRequestEntry{
				Source:     aws.String(source),
				DetailType: aws.String(DetailType),
				Detail:     aws.String(string(body)),
				Resources:  []string{"arn:aws:s3:::" + d.Bucket + "/" + d.Key},
				Time:       aws.Time(d.UpdatedAt),
			}
			if b.Bus != "" {
				e.EventBusName = aws.String(b.Bus)
			}
			entries = append(entries, e)
		}
		out, err := b.Client.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: entries})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("put %d event(s): %w", n, err))
		case out.FailedEntryCount > 0:
			first := ""
			for _, r := range out.Entries {
				if r.ErrorCode != nil {
					first = aws.ToString(r.ErrorCode) + ": " + aws.ToString(r.ErrorMessage)
					break
				}
			}
			errs = append(errs, fmt.Errorf("put events: %d of %d refused (first: %s)", out.FailedEntryCount, n, first))
		}
		details = details[n:]
	}
	return errors.Join(errs...)
}
