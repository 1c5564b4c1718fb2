package nats

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
)

var _ dispatch.Dispatcher = (*Dispatcher)(nil)

// publishTimeout bounds one publish and its acknowledgement by the
// stream; a publish retried after it carries the same message ID.
const publishTimeout = 5 * time.Second

// errStoreFailed is JetStream's error code when the stream refuses a
// message it cannot store: here, a second message for a job's subject.
const errStoreFailed jetstream.ErrorCode = 10077

// EnsureStream creates the work-queue stream, or updates it to cfg,
// idempotently: file storage, one message per job subject (discard new
// per subject), kept until a worker acknowledges it.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:                 cfg.Stream,
		Description:          "Conveyor job IDs for `conveyor worker serve`",
		Subjects:             []string{cfg.Filter()},
		Retention:            jetstream.WorkQueuePolicy,
		Storage:              jetstream.FileStorage,
		Replicas:             cfg.Replicas,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		MaxMsgsPerSubject:    1,
		Duplicates:           cfg.Duplicates,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update JetStream stream %s (subjects %s): %w; is JetStream enabled on the server, and are there %d server(s) for its replicas?", cfg.Stream, cfg.Filter(), err, cfg.Replicas)
	}
	return s, nil
}

// Dispatcher publishes job IDs to the work-queue stream.
type Dispatcher struct {
	js  jetstream.JetStream
	cfg StreamConfig

	mu     sync.Mutex
	closed bool
}

// New ensures the stream exists (EnsureStream) and returns a dispatcher
// publishing to it over js. The connection stays the caller's: Close does
// not close it.
func New(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (*Dispatcher, error) {
	cfg = cfg.WithDefaults()
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	return &Dispatcher{js: js, cfg: cfg}, nil
}

// Name implements dispatch.Dispatcher.
func (d *Dispatcher) Name() string { return "nats" }

// Dispatch publishes the job's ID to <subject>.<job ID> and returns the
// stream sequence as "<stream>:<seq>"; "" when the job's message is
// already in the stream (queued, or held by a worker), which coalesces
// it. It returns ErrUnavailable when the stream cannot be reached or does
// not answer: the reconciler dispatches the job again later.
func (d *Dispatcher) Dispatch(ctx context.Context, jobID string) (string, error) {
	if err := job.CheckID(jobID); err != nil {
		return "", fmt.Errorf("%w: %v", dispatch.ErrInvalidJobID, err)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return "", dispatch.ErrClosed
	}
	// One ID for this call's publishes: a retry after a lost
	// acknowledgement is a duplicate of the first, not a new message.
	msgID := jobID + "." + nonce()
	msg := &natsgo.Msg{Subject: d.cfg.JobSubject(jobID), Data: []byte(jobID), Header: natsgo.Header{}}
	var last error
	for try := 0; try < 3; try++ {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		ack, err := d.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(d.cfg.Stream))
		cancel()
		if err == nil {
			return fmt.Sprintf("%s:%d", ack.Stream, ack.Sequence), nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errStoreFailed && strings.Contains(apiErr.Description, "per subject") {
			return "", nil // its message is in the stream already
		}
		last = err
		if ctx.Err() != nil || !retryable(err) {
			break
		}
	}
	return "", fmt.Errorf("%w: publish job %s to NATS stream %s: %v", dispatch.ErrUnavailable, jobID, d.cfg.Stream, last)
}

// retryable says whether a publish may succeed if tried again at once.
func retryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, natsgo.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, natsgo.ErrNoResponders)
}

// Close stops accepting jobs; messages already published stay in the
// stream for the workers.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

func nonce() string {
	var b [6]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
