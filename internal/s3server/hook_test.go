package s3server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v3"
	"github.com/google/go-cmp/cmp"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, path, query, copySource string
		want                                  operation
	}{
		{"put", "PUT", "/in/a.txt", "", "", operation{EventPut, "in", "a.txt"}},
		{"put escaped key", "PUT", "/in/dir/a%20b%2Bc%20%C3%A9.txt", "", "", operation{EventPut, "in", "dir/a b+c é.txt"}},
		{"put plus stays plus", "PUT", "/in/a+b", "", "", operation{EventPut, "in", "a+b"}},
		{"put unknown query", "PUT", "/in/a", "x-id=PutObject", "", operation{EventPut, "in", "a"}},
		{"copy", "PUT", "/out/b", "", "in/a", operation{EventCopy, "out", "b"}},
		{"complete", "POST", "/in/big", "uploadId=u1", "", operation{EventComplete, "in", "big"}},
		{"create bucket", "PUT", "/in", "", "", operation{}},
		{"create bucket slash", "PUT", "/in/", "", "", operation{}},
		{"bucket tagging", "PUT", "/in", "tagging", "", operation{}},
		{"object tagging", "PUT", "/in/a", "tagging", "", operation{}},
		{"object acl", "PUT", "/in/a", "acl", "", operation{}},
		{"object retention", "PUT", "/in/a", "retention", "", operation{}},
		{"object legal hold", "PUT", "/in/a", "legal-hold", "", operation{}},
		{"upload part", "PUT", "/in/a", "partNumber=1&uploadId=u1", "", operation{}},
		{"upload part copy", "PUT", "/in/a", "partNumber=1&uploadId=u1", "in/b", operation{}},
		{"create multipart", "POST", "/in/a", "uploads", "", operation{}},
		{"restore", "POST", "/in/a", "restore", "", operation{}},
		{"get", "GET", "/in/a", "", "", operation{}},
		{"delete", "DELETE", "/in/a", "", "", operation{}},
		{"bad escape", "PUT", "/in/a%zz", "", "", operation{}},
		{"escaped percent decoded once", "PUT", "/in/%252e%252e/x", "", "", operation{EventPut, "in", "%2e%2e/x"}},
		{"dot dot inside", "PUT", "/in/a/../b", "", "", operation{EventPut, "in", "b"}},
		{"double slash", "PUT", "/in/a//b", "", "", operation{EventPut, "in", "a/b"}},
		{"leading slash", "PUT", "/in//a", "", "", operation{EventPut, "in", "a"}},
		{"directory object", "PUT", "/in/dir/", "", "", operation{EventPut, "in", "dir/"}},
		{"post object", "POST", "/in", "", "", operation{EventPost, "in", ""}},
		{"post object slash", "POST", "/in/", "", "", operation{EventPost, "in", ""}},
		{"delete objects", "POST", "/in", "delete", "", operation{}},
		{"post to service", "POST", "/", "", "", operation{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.method, tc.path, tc.query, tc.copySource)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("classify (-want +got):\n%s", diff)
			}
		})
	}
}

func TestETagFromBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, want string
		wantErr          error
	}{
		{"complete", `<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>x</Location><Bucket>in</Bucket><Key>k</Key><ETag>"abc-2"</ETag></CompleteMultipartUploadResult>`, "abc-2", nil},
		{"copy", `<CopyObjectResult><LastModified>2024-01-01T00:00:00Z</LastModified><ETag>&#34;d41d8&#34;</ETag></CopyObjectResult>`, "d41d8", nil},
		{"error document", `<Error><Code>InternalError</Code></Error>`, "", errFailedInBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := etagFromBody([]byte(tc.body))
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("etagFromBody = %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	if _, err := etagFromBody([]byte("not xml")); err == nil {
		t.Error("no error for a body that is not XML")
	}
}

// With EventBuckets set, objects created elsewhere cost no event: the
// pipeline's own writes to its state and output buckets are not events.
func TestHookWatchesOnlyItsBuckets(t *testing.T) {
	var got []string
	h := newHook("us-east-1", func(doc []byte) { got = append(got, string(doc)) }, t.Logf)
	h.buckets = map[string]bool{"input": true}
	app := fiber.New()
	app.Use(h.middleware)
	app.Put("/*", func(c fiber.Ctx) error {
		c.Set("ETag", `"abc"`)
		return c.SendStatus(http.StatusOK)
	})
	for _, path := range []string{"/state/jobs/x.json", "/output/k/report.json", "/input/k.txt"} {
		req := httptest.NewRequest(http.MethodPut, path, strings.NewReader("body"))
		resp, err := app.Test(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: %v %v", path, resp, err)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], `"name":"input"`) || !strings.Contains(got[0], `"key":"k.txt"`) {
		t.Fatalf("events %q, want one for input/k.txt", got)
	}
}
