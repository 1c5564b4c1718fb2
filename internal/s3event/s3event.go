package s3event

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ObjectCreated is one created object, decoded: Key is the object key as
// stored, never URL-encoded.
type ObjectCreated struct {
	EventName string    // e.g. "ObjectCreated:Put"
	EventTime time.Time // zero when the event carries none
	Bucket    string
	Key       string
	Size      int64  // 0 when unknown (multipart and copy on the embedded server)
	ETag      string // without quotes; empty when unknown
	VersionID string // empty when the bucket is not versioned
	Sequencer string
}

// Notification is the S3 event notification document, as Amazon S3 sends it
// to Lambda, SQS or SNS.
type Notification struct {
	Records []Record `json:"Records"`
}

// Record is one entry of Notification.Records.
type Record struct {
	EventVersion      string            `json:"eventVersion"`
	EventSource       string            `json:"eventSource"`
	AWSRegion         string            `json:"awsRegion"`
	EventTime         string            `json:"eventTime"`
	EventName         string            `json:"eventName"`
	UserIdentity      Identity          `json:"userIdentity"`
	RequestParameters map[string]string `json:"requestParameters"`
	ResponseElements  map[string]string `json:"responseElements"`
	S3                Entity            `json:"s3"`
}

// Identity is the principal in a Record.
type Identity struct {
	PrincipalID string `json:"principalId"`
}

// Entity is the "s3" part of a Record.
type Entity struct {
	SchemaVersion   string `json:"s3SchemaVersion"`
	ConfigurationID string `json:"configurationId"`
	Bucket          Bucket `json:"bucket"`
	Object          Object `json:"object"`
}

// Bucket is the bucket of an Entity.
type Bucket struct {
	Name          string   `json:"name"`
	OwnerIdentity Identity `json:"ownerIdentity"`
	ARN           string   `json:"arn"`
}

// Object is the object of an Entity. Key is URL-encoded, spaces as '+'.
type Object struct {
	Key       string `json:"key"`
	Size      int64  `json:"size"`
	ETag      string `json:"eTag,omitempty"`
	VersionID string `json:"versionId,omitempty"`
	Sequencer string `json:"sequencer"`
}

// ErrNotObjectCreated is returned by Parse for a document that is valid but
// announces nothing to process: the s3:TestEvent S3 sends when a
// notification is configured, or an event of another kind.
var ErrNotObjectCreated = errors.New("not an object-created event")

// BadRecord describes one record Parse could not use; the others still count.
type BadRecord struct {
	Index int
	Err   error
}

func (b BadRecord) Error() string { return fmt.Sprintf("record %d: %v", b.Index, b.Err) }

// Parse decodes any supported notification document. It returns the created
// objects it found and, separately, the records it had to skip, so one bad
// record never hides the others. A document that is not JSON or has no
// recognised shape is an error; an s3:TestEvent returns ErrNotObjectCreated.
func Parse(body []byte) ([]ObjectCreated, []BadRecord, error) {
	var probe struct {
		Records    json.RawMessage `json:"Records"`
		Event      string          `json:"Event"`
		DetailType string          `json:"detail-type"`
		Source     string          `json:"source"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, nil, fmt.Errorf("decode event: %w", err)
	}
	switch {
	case probe.Event == "s3:TestEvent":
		return nil, nil, ErrNotObjectCreated
	case probe.Records != nil:
		return parseRecords(probe.Records)
	case probe.DetailType != "":
		if probe.DetailType != "Object Created" {
			return nil, nil, ErrNotObjectCreated
		}
		oc, err := parseEventBridge(body)
		if err != nil {
			return nil, []BadRecord{{Index: 0, Err: err}}, nil
		}
		return []ObjectCreated{oc}, nil, nil
	default:
		return nil, nil, errors.New("decode event: neither an S3 notification (Records) nor an EventBridge event (detail-type)")
	}
}

func parseRecords(raw json.RawMessage) ([]ObjectCreated, []BadRecord, error) {
	var recs []json.RawMessage
	if err := json.Unmarshal(raw, &recs); err != nil {
		return nil, nil, fmt.Errorf("decode event: Records is not a list: %w", err)
	}
	var out []ObjectCreated
	var bad []BadRecord
	for i, r := range recs {
		oc, err := parseRecord(r)
		if errors.Is(err, ErrNotObjectCreated) {
			continue
		}
		if err != nil {
			bad = append(bad, BadRecord{Index: i, Err: err})
			continue
		}
		out = append(out, oc)
	}
	return out, bad, nil
}

func parseRecord(raw json.RawMessage) (ObjectCreated, error) {
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return ObjectCreated{}, err
	}
	if !strings.HasPrefix(r.EventVersion, "2.") {
		return ObjectCreated{}, fmt.Errorf("eventVersion %q is not 2.x", r.EventVersion)
	}
	name := strings.TrimPrefix(r.EventName, "s3:")
	if !strings.HasPrefix(name, "ObjectCreated:") {
		return ObjectCreated{}, ErrNotObjectCreated
	}
	if r.S3.Bucket.Name == "" {
		return ObjectCreated{}, errors.New("no bucket name")
	}
	decode := DecodeKey
	if fromVersityGW(r) {
		decode = verbatimKey
	}
	key, err := decode(r.S3.Object.Key)
	if err != nil {
		return ObjectCreated{}, err
	}
	oc := ObjectCreated{
		EventName: name,
		Bucket:    r.S3.Bucket.Name,
		Key:       key,
		Size:      r.S3.Object.Size,
		ETag:      TrimETag(r.S3.Object.ETag),
		VersionID: r.S3.Object.VersionID,
		Sequencer: r.S3.Object.Sequencer,
	}
	if r.EventTime != "" {
		if t, err := time.Parse(time.RFC3339Nano, r.EventTime); err == nil {
			oc.EventTime = t
		}
	}
	return oc, nil
}

// EventBridge "Object Created" detail, as S3 sends it to EventBridge: the key
// is not URL-encoded there.
func parseEventBridge(body []byte) (ObjectCreated, error) {
	var ev struct {
		Time   string `json:"time"`
		Detail struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key       string `json:"key"`
				Size      int64  `json:"size"`
				ETag      string `json:"etag"`
				VersionID string `json:"version-id"`
				Sequencer string `json:"sequencer"`
			} `json:"object"`
			Reason string `json:"reason"`
		} `json:"detail"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return ObjectCreated{}, err
	}
	d := ev.Detail
	if d.Bucket.Name == "" || d.Object.Key == "" {
		return ObjectCreated{}, errors.New("EventBridge detail has no bucket name or object key")
	}
	oc := ObjectCreated{
		EventName: "ObjectCreated:" + d.Reason,
		Bucket:    d.Bucket.Name,
		Key:       d.Object.Key,
		Size:      d.Object.Size,
		ETag:      TrimETag(d.Object.ETag),
		VersionID: d.Object.VersionID,
		Sequencer: d.Object.Sequencer,
	}
	if t, err := time.Parse(time.RFC3339, ev.Time); err == nil {
		oc.EventTime = t
	}
	return oc, nil
}

// DecodeKey undoes the key encoding of S3 notifications: form encoding, with
// '+' for a space.
func DecodeKey(k string) (string, error) {
	key, err := url.QueryUnescape(k)
	if err != nil {
		return "", fmt.Errorf("object key %q is not URL-encoded: %w", k, err)
	}
	if key == "" {
		return "", errors.New("empty object key")
	}
	return key, nil
}

// versityGWConfigs are the configurationId values versitygw's event
// targets put in every record (its s3event package: one global
// configuration per target; the NATS target sends "webhook-global" too).
var versityGWConfigs = map[string]bool{"kafka-global": true, "nats-global": true, "webhook-global": true, "rabbitmq-global": true}

// fromVersityGW tells a versitygw record: its key is the request's
// decoded path, verbatim (v1.8.0 sends "a b+c%.txt" as is), not S3's form
// encoding.
func fromVersityGW(r Record) bool {
	return r.EventVersion == "2.2" && versityGWConfigs[r.S3.ConfigurationID]
}

func verbatimKey(k string) (string, error) {
	if k == "" {
		return "", errors.New("empty object key")
	}
	return k, nil
}

// EncodeKey encodes a key the way S3 notifications do.
func EncodeKey(k string) string {
	return strings.ReplaceAll(url.QueryEscape(k), "%2F", "/")
}

// TrimETag removes the quotes S3 puts around ETags.
func TrimETag(etag string) string { return strings.Trim(etag, `"`) }

// NewRecord builds the notification record S3 would send for oc.
func NewRecord(region string, oc ObjectCreated) Record {
	t := oc.EventTime
	if t.IsZero() {
		t = time.Now()
	}
	return Record{
		EventVersion:      "2.1",
		EventSource:       "aws:s3",
		AWSRegion:         region,
		EventTime:         t.UTC().Format("2006-01-02T15:04:05.000Z"),
		EventName:         oc.EventName,
		UserIdentity:      Identity{PrincipalID: "conveyor"},
		RequestParameters: map[string]string{"sourceIPAddress": "127.0.0.1"},
		ResponseElements:  map[string]string{},
		S3: Entity{
			SchemaVersion:   "1.0",
			ConfigurationID: "conveyor",
			Bucket: Bucket{
				Name:          oc.Bucket,
				OwnerIdentity: Identity{PrincipalID: "conveyor"},
				ARN:           "arn:aws:s3:::" + oc.Bucket,
			},
			Object: Object{
				Key:       EncodeKey(oc.Key),
				Size:      oc.Size,
				ETag:      oc.ETag,
				VersionID: oc.VersionID,
				Sequencer: oc.Sequencer,
			},
		},
	}
}
