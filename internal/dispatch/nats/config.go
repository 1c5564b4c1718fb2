package nats

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults of StreamConfig.
const (
	DefaultStream     = "CONVEYOR_JOBS"
	DefaultSubject    = "conveyor.jobs"
	DefaultReplicas   = 1
	DefaultDuplicates = 2 * time.Minute
)

// StreamConfig names the work-queue stream and says how it is kept.
type StreamConfig struct {
	// Stream is the JetStream stream's name (default DefaultStream).
	Stream string
	// Subject is the prefix of the jobs' subjects: a job's message goes
	// to <Subject>.<job ID> (default DefaultSubject).
	Subject string
	// Replicas is how many servers of a JetStream cluster keep the
	// stream: 1 on one server, 3 (or 5) on a cluster (default 1).
	Replicas int
	// Duplicates is the stream's duplicate window for Nats-Msg-Id
	// (default DefaultDuplicates).
	Duplicates time.Duration
}

// WithDefaults fills in unset fields.
func (c StreamConfig) WithDefaults() StreamConfig {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	return c
}

// Validate names the first invalid field.
func (c StreamConfig) Validate() error {
	switch {
	case c.Stream == "" || strings.ContainsAny(c.Stream, ". *>\t\r\n/\\"):
		return fmt.Errorf("cluster.nats_stream %q must be a non-empty name without spaces, dots, slashes or wildcards", c.Stream)
	case c.Subject == "" || strings.ContainsAny(c.Subject, " *>\t\r\n") || strings.HasPrefix(c.Subject, ".") || strings.HasSuffix(c.Subject, "."):
		return fmt.Errorf("cluster.nats_subject %q must be a subject like conveyor.jobs, without wildcards or spaces", c.Subject)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("cluster.nats_replicas must be between 1 and 5, got %d", c.Replicas)
	case c.Duplicates < time.Second:
		return errors.New("the stream's duplicate window must be at least 1s")
	}
	return nil
}

// JobSubject is the subject a job's message is published to.
func (c StreamConfig) JobSubject(jobID string) string { return c.Subject + "." + jobID }

// Filter is the subject filter matching every job's message.
func (c StreamConfig) Filter() string { return c.Subject + ".*" }

// JobID returns the job ID a message's subject carries, "" when the
// subject is not one of this stream's job subjects.
func (c StreamConfig) JobID(subject string) string {
	id, ok := strings.CutPrefix(subject, c.Subject+".")
	if !ok || strings.Contains(id, ".") {
		return ""
	}
	return id
}
