package cwlogs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"

	"github.com/conveyorhq/conveyor/internal/worker"
)

// CloudWatch Logs' limits on one PutLogEvents call.
const (
	// MaxEventBytes is the largest message of one event: 256 KiB less the
	// 26 bytes CloudWatch counts per event. A longer line is split.
	MaxEventBytes = 256*1024 - eventOverhead
	maxBatchBytes = 1024 * 1024
	maxBatchCount = 10000
	eventOverhead = 26
)

// Sink puts each attempt's log in a stream of its own in Group. The
// caller needs logs:CreateLogStream and logs:PutLogEvents on the group,
// which must exist.
type Sink struct {
	Client *cloudwatchlogs.Client
	Group  string
}

var _ worker.LogSink = (*Sink)(nil)

// StreamName is the log stream of one attempt of a job.
func StreamName(id string, attempt int) string { return id + "/" + strconv.Itoa(attempt) }

// PutAttemptLog creates the attempt's stream (an existing one is kept)
// and puts log in it, one event per line (empty lines dropped, long ones
// split), stamped with the time of the call: the lines carry their own
// times when the processor writes them.
func (s *Sink) PutAttemptLog(ctx context.Context, id string, attempt int, log io.Reader) error {
	stream := StreamName(id, attempt)
	_, err := s.Client.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: &s.Group, LogStreamName: &stream})
	var exists *types.ResourceAlreadyExistsException
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create log stream %s in %s: %w", stream, s.Group, err)
	}
	ts := aws.Int64(time.Now().UnixMilli())
	var batch []types.InputLogEvent
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := s.Client.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: &s.Group, LogStreamName: &stream, LogEvents: batch})
		batch, size = nil, 0
		if err != nil {
			return fmt.Errorf("put log events in %s/%s: %w", s.Group, stream, err)
		}
		return nil
	}
	sc := bufio.NewScanner(log)
	sc.Buffer(make([]byte, 64*1024), MaxEventBytes)
	sc.Split(linesOf(MaxEventBytes))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if len(batch) == maxBatchCount || size+len(line)+eventOverhead > maxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, types.InputLogEvent{Message: aws.String(line), Timestamp: ts})
		size += len(line) + eventOverhead
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the attempt's log: %w", err)
	}
	return flush()
}

// linesOf is bufio.ScanLines that also cuts a line at max bytes.
func linesOf(max int) bufio.SplitFunc {
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if len(data) >= max {
			for i := 0; i < max; i++ {
				if data[i] == '\n' {
					return bufio.ScanLines(data, atEOF)
				}
			}
			return max, data[:max], nil
		}
		return bufio.ScanLines(data, atEOF)
	}
}
