package s3server

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v3"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// Event names the hook emits, as in S3 notifications (without "s3:").
const (
	EventPut      = "ObjectCreated:Put"
	EventComplete = "ObjectCreated:CompleteMultipartUpload"
	EventCopy     = "ObjectCreated:Copy"
	// EventPost is a POST Object: a browser form upload, a
	// multipart/form-data POST to the bucket with the key in a form field.
	EventPost = "ObjectCreated:Post"
)

// objectSubresources are the object-level PUT sub-resources versitygw routes
// to something other than PutObject or CopyObject (see s3api/router.go).
var objectSubresources = []string{"tagging", "retention", "legal-hold", "acl", "uploadId", "partNumber"}

// operation is what a request does to the object store, as far as the hook
// cares: which event it would emit, for which object.
type operation struct {
	EventName string // empty when the request creates no object
	Bucket    string
	Key       string // empty for EventPost: the key is in the form
}

// classify tells from a request's method, raw (still escaped) path, raw
// query and x-amz-copy-source header whether it creates an object. It
// mirrors versitygw's path-style router, so that what the hook reports is
// what the gateway did.
func classify(method, rawPath, rawQuery, copySource string) operation {
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return operation{} // versitygw rejects it too
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	// ParseQuery keeps what it could parse; fasthttp is as lenient.
	query, _ := url.ParseQuery(rawQuery)
	if bucket != "" && key == "" && method == http.MethodPost && !query.Has("delete") {
		// Every bucket POST but DeleteObjects is routed to POST Object
		// (those with uploadId or a copy source only to be refused).
		return operation{EventName: EventPost, Bucket: bucket}
	}
	if bucket == "" || key == "" {
		return operation{} // service- or other bucket-level request
	}
	op := operation{Bucket: bucket, Key: storedKey(key)}
	switch method {
	case http.MethodPut:
		for _, sub := range objectSubresources {
			if query.Has(sub) {
				return operation{}
			}
		}
		op.EventName = EventPut
		if copySource != "" {
			op.EventName = EventCopy
		}
	case http.MethodPost:
		if !query.Has("uploadId") {
			return operation{}
		}
		op.EventName = EventComplete
	default:
		return operation{}
	}
	return op
}

// storedKey is the name under which versitygw's posix backend stores key,
// and under which ListObjects will return it: the backend joins bucket and
// key as file paths, so "a/../b", "./b" and "a//b" become "b", "b" and
// "a/b". Reporting that name keeps the event, the object's later HEAD and
// the reconciler's listing in agreement. A trailing slash (a directory
// object) is kept.
func storedKey(key string) string {
	clean := strings.TrimLeft(path.Clean("/"+key), "/")
	if strings.HasSuffix(key, "/") && clean != "" {
		clean += "/"
	}
	return clean
}

// hook builds the object-created events of one server.
type hook struct {
	buckets map[string]bool // nil: every bucket
	region  string
	onEvent func([]byte)
	logf    func(string, ...any)
	seq     atomic.Uint64
}

func newHook(region string, onEvent func([]byte), logf func(string, ...any)) *hook {
	h := &hook{region: region, onEvent: onEvent, logf: logf}
	// Seeded from the clock so sequencers keep increasing across restarts.
	h.seq.Store(uint64(time.Now().UnixNano()))
	return h
}

// sequencer returns the next sequencer: fixed-width upper-case hex, so that
// comparing two as strings orders them like S3's.
func (h *hook) sequencer() string {
	return fmt.Sprintf("%016X", h.seq.Add(1))
}

// middleware is mounted on "/" ahead of every route. It lets the request run
// to completion (authentication included, which versitygw performs inside
// each route's handler chain) and only then looks at the outcome.
func (h *hook) middleware(c fiber.Ctx) error {
	if h.onEvent == nil {
		return c.Next()
	}
	// Classify before Next: versitygw's DecodeURL middleware replaces the
	// request path with its unescaped form, and decoding that a second
	// time would turn a key such as "%2e%2e/x" into "../x".
	uri := c.Request().URI()
	op := classify(c.Method(), string(uri.PathOriginal()), string(uri.QueryString()), c.Get("X-Amz-Copy-Source"))
	if h.buckets != nil && !h.buckets[op.Bucket] {
		return c.Next()
	}
	err := c.Next()
	if err != nil || op.EventName == "" {
		// An error returned here has not been turned into a status yet,
		// but it means the request failed: no event either way.
		return err
	}
	status := c.Response().StatusCode()
	if op.EventName == EventPost {
		if oc, ok := h.postObjectCreated(c, op.Bucket, status); ok {
			oc.EventTime = time.Now()
			oc.Sequencer = h.sequencer()
			h.emit(oc)
		}
		return nil
	}
	if status < 200 || status > 299 {
		return nil
	}
	oc := s3event.ObjectCreated{
		EventName: op.EventName,
		EventTime: time.Now(),
		Bucket:    op.Bucket,
		Key:       op.Key,
		VersionID: responseHeader(c, "X-Amz-Version-Id"),
		Sequencer: h.sequencer(),
	}
	switch op.EventName {
	case EventPut:
		oc.ETag = s3event.TrimETag(responseHeader(c, "ETag"))
		oc.Size = requestSize(c)
	default:
		etag, perr := etagFromBody(c.Response().Body())
		if errors.Is(perr, errFailedInBody) {
			return nil
		}
		if perr != nil {
			// The object exists all the same: report it without an ETag
			// rather than not at all.
			h.logf("s3server: %s %s/%q: %v", op.EventName, op.Bucket, op.Key, perr)
		}
		oc.ETag = etag
	}
	h.emit(oc)
	return nil
}

func (h *hook) emit(oc s3event.ObjectCreated) {
	doc, err := json.Marshal(s3event.Notification{Records: []s3event.Record{s3event.NewRecord(h.region, oc)}})
	if err != nil {
		h.logf("s3server: encode event for %s/%q: %v", oc.Bucket, oc.Key, err)
		return
	}
	// A panicking consumer must not turn a stored object into a 500.
	defer func() {
		if r := recover(); r != nil {
			h.logf("s3server: OnEvent panicked on %s/%q: %v", oc.Bucket, oc.Key, r)
		}
	}()
	h.onEvent(doc)
}

// responseHeader is the value of the response header name, in any case:
// versitygw sets its headers with normalizing off ("x-amz-version-id",
// "ETag", "Etag"), so that Peek finds them only by their exact spelling.
func responseHeader(c fiber.Ctx, name string) string {
	for k, v := range c.Response().Header.All() {
		if strings.EqualFold(string(k), name) {
			return string(v)
		}
	}
	return ""
}

// requestSize is the size of a PutObject body: the decoded length when the
// client sent aws-chunked content, else Content-Length.
func requestSize(c fiber.Ctx) int64 {
	if v := c.Get("X-Amz-Decoded-Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	if n := c.Request().Header.ContentLength(); n > 0 {
		return int64(n)
	}
	return 0
}

// errFailedInBody is an S3 error document sent with status 200, which S3
// allows for CopyObject and CompleteMultipartUpload.
var errFailedInBody = errors.New("error document with status 200")

// etagFromBody reads the ETag of a CompleteMultipartUploadResult or
// CopyObjectResult document.
func etagFromBody(body []byte) (string, error) {
	var doc struct {
		XMLName xml.Name
		ETag    string `xml:"ETag"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("read ETag from response: %w", err)
	}
	if doc.XMLName.Local == "Error" {
		return "", errFailedInBody
	}
	if doc.ETag == "" {
		return "", fmt.Errorf("response %s has no ETag", doc.XMLName.Local)
	}
	return s3event.TrimETag(doc.ETag), nil
}
