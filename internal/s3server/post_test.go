package s3server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// postForm is one browser form upload (POST Object), signed as a browser
// form is: a base64 policy listing a condition for every field, signed with
// the SigV4 signing key of the form's date.
type postForm struct {
	key      string            // the key field, may hold ${filename}
	filename string            // the file part's file name
	fields   map[string]string // more fields, each given an "eq" condition
	badSig   bool              // sign with the wrong secret
	// policy overrides the value the policy requires of some fields.
	policy map[string]string
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// post sends form with body as the file to the shared server's input
// bucket and returns the response, read.
func post(t *testing.T, form postForm, body []byte) (*http.Response, []byte) {
	t.Helper()
	now := time.Now().UTC()
	date := now.Format("20060102")
	fields := map[string]string{
		"bucket":           testBucket,
		"key":              form.key,
		"x-amz-algorithm":  "AWS4-HMAC-SHA256",
		"x-amz-credential": testAccessKey + "/" + date + "/" + DefaultRegion + "/s3/aws4_request",
		"x-amz-date":       now.Format("20060102T150405Z"),
	}
	for k, v := range form.fields {
		fields[k] = v
	}
	conditions := []any{}
	for k, v := range fields {
		if p, ok := form.policy[k]; ok {
			v = p
		}
		conditions = append(conditions, []string{"eq", "$" + k, v})
	}
	doc, err := json.Marshal(map[string]any{"expiration": now.Add(time.Hour).Format(time.RFC3339), "conditions": conditions})
	if err != nil {
		t.Fatal(err)
	}
	policy := base64.StdEncoding.EncodeToString(doc)
	secret := testSecretKey
	if form.badSig {
		secret = "not-the-secret"
	}
	signingKey := hmacSHA256(hmacSHA256(hmacSHA256(hmacSHA256([]byte("AWS4"+secret), date), DefaultRegion), "s3"), "aws4_request")
	fields["policy"] = policy
	fields["x-amz-signature"] = hex.EncodeToString(hmacSHA256(signingKey, policy))

	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// The file comes last: S3 ignores fields after it.
	fw, err := w.CreateFormFile("file", form.filename)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, testServer.Endpoint()+"/"+testBucket, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, respBody
}

// checkPostEvent checks that the one event about key describes the object
// HEAD finds there, with the size of body and resp's ETag and version.
func checkPostEvent(t *testing.T, key string, body []byte, resp *http.Response) {
	t.Helper()
	docs, evs := testEvents.forKey(t, testBucket, key)
	if len(evs) != 1 {
		t.Fatalf("want 1 event for %q, got %d: %q", key, len(evs), docs)
	}
	head, err := client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("HEAD of the event's key %q: %v", key, err)
	}
	want := s3event.ObjectCreated{
		EventName: "ObjectCreated:Post",
		Bucket:    testBucket,
		Key:       key,
		Size:      int64(len(body)),
		ETag:      s3event.TrimETag(resp.Header.Get("ETag")),
		VersionID: resp.Header.Get("X-Amz-Version-Id"),
	}
	if diff := cmp.Diff(want, evs[0], ignoreVolatile); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if got := s3event.TrimETag(aws.ToString(head.ETag)); got != evs[0].ETag || aws.ToString(head.VersionId) != evs[0].VersionID || aws.ToInt64(head.ContentLength) != evs[0].Size {
		t.Errorf("HEAD: etag %q version %q size %d; event: %+v", got, aws.ToString(head.VersionId), aws.ToInt64(head.ContentLength), evs[0])
	}
	if evs[0].VersionID == "" || evs[0].ETag == "" {
		t.Errorf("event without version or ETag: %+v", evs[0])
	}
}

func TestPostObjectEmitsPostEvent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, status string
		want         int
	}{
		{"default 204", "", http.StatusNoContent},
		{"status 200", "200", http.StatusOK},
		{"status 201", "201", http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key := "post/" + tc.name + " é+.txt"
			body := []byte("form upload " + tc.name)
			form := postForm{key: key, filename: "local.txt"}
			if tc.status != "" {
				form.fields = map[string]string{"success_action_status": tc.status}
			}
			resp, respBody := post(t, form, body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, respBody)
			}
			checkPostEvent(t, key, body, resp)
			if tc.want == http.StatusCreated {
				var doc struct{ Key, ETag string }
				if err := xml.Unmarshal(respBody, &doc); err != nil || doc.Key != key {
					t.Errorf("201 body %s: key %q, %v", respBody, doc.Key, err)
				}
			}
		})
	}
}

// S3 replaces ${filename} in the key field with the file part's name.
// versitygw v1.8.0 does not: it stores the key as written. The event names
// what was stored, whichever it is.
func TestPostObjectFilenameKey(t *testing.T) {
	t.Parallel()
	const field, filename = "post-filename/${filename}", "photo 1.jpg"
	body := []byte("a photo")
	resp, respBody := post(t, postForm{key: field, filename: filename}, body)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d: %s", resp.StatusCode, respBody)
	}
	_, literal := testEvents.forKey(t, testBucket, field)
	_, replaced := testEvents.forKey(t, testBucket, "post-filename/"+filename)
	switch {
	case len(literal) == 1 && len(replaced) == 0:
		t.Logf("versitygw stored the key as written: %q", field)
		checkPostEvent(t, field, body, resp)
	case len(replaced) == 1 && len(literal) == 0:
		checkPostEvent(t, "post-filename/"+filename, body, resp)
	default:
		t.Fatalf("events for the literal key %+v, for the replaced one %+v: want one in all", literal, replaced)
	}
}

// With success_action_redirect versitygw answers 303 and says no version:
// the event has key and ETag, and size 0 so that the consumer HEADs.
func TestPostObjectRedirect(t *testing.T) {
	t.Parallel()
	const key = "post/redirect.txt"
	resp, respBody := post(t, postForm{key: key, filename: "r.txt", fields: map[string]string{
		"success_action_redirect": "http://example.com/done?from=form",
	}}, []byte("redirected"))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d: %s", resp.StatusCode, respBody)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	_, evs := testEvents.forKey(t, testBucket, key)
	want := []s3event.ObjectCreated{{EventName: EventPost, Bucket: testBucket, Key: key, ETag: s3event.TrimETag(loc.Query().Get("etag"))}}
	if diff := cmp.Diff(want, evs, ignoreVolatile); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestFailedPostObjectEmitsNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		form postForm
	}{
		{"bad signature", postForm{key: "post-failed/signature", filename: "f", badSig: true}},
		{"policy not met", postForm{key: "post-failed/policy", filename: "f",
			fields: map[string]string{"success_action_status": "201"},
			policy: map[string]string{"success_action_status": "204"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			form := tc.form
			resp, respBody := post(t, form, []byte("refused"))
			if resp.StatusCode < 400 {
				t.Fatalf("status %d: %s", resp.StatusCode, respBody)
			}
			if docs, _ := testEvents.forKey(t, testBucket, form.key); len(docs) != 0 {
				t.Errorf("refused POST emitted %q", docs)
			}
			if _, err := client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(form.key)}); err == nil {
				t.Errorf("refused POST stored %q", form.key)
			}
		})
	}
}
