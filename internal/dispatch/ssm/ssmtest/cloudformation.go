package ssmtest

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Stack is one CloudFormation stack of a fake CloudFormation.
type Stack struct {
	Name   string
	Status string // "" is CREATE_COMPLETE
	// Outputs are the stack's outputs, by OutputKey.
	Outputs map[string]string
	// Parameters are the stack's parameter values, by ParameterKey.
	Parameters map[string]string
}

// CloudFormation is a fake AWS CloudFormation endpoint for DescribeStacks,
// in the service's query protocol with XML answers, as the AWS SDK for Go
// v2 speaks it. It has its own URL: point a client at it with
// AWS_ENDPOINT_URL_CLOUDFORMATION. Requests that break the protocol fail
// the test. It is safe for concurrent use.
type CloudFormation struct {
	URL string

	t      testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	stacks map[string]Stack
	calls  int
}

// NewCloudFormation starts a fake CloudFormation holding stacks, in
// DefaultRegion; it is closed when the test ends.
func NewCloudFormation(t testing.TB, stacks ...Stack) *CloudFormation {
	cf := &CloudFormation{t: t, stacks: map[string]Stack{}}
	for _, s := range stacks {
		cf.stacks[s.Name] = s
	}
	cf.srv = httptest.NewServer(http.HandlerFunc(cf.serve))
	cf.URL = cf.srv.URL
	t.Cleanup(cf.srv.Close)
	return cf
}

// Calls returns how many requests arrived.
func (cf *CloudFormation) Calls() int {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	return cf.calls
}

const cfnXMLNS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"

type cfnOutput struct {
	OutputKey   string
	OutputValue string
	Description string
}

type cfnStack struct {
	StackName    string
	StackId      string
	StackStatus  string
	CreationTime string
	Outputs      []cfnOutput `xml:"Outputs>member"`
	Parameters   []cfnParam  `xml:"Parameters>member"`
}

type cfnParam struct {
	ParameterKey   string
	ParameterValue string
}

type describeStacksResponse struct {
	XMLName   xml.Name   `xml:"DescribeStacksResponse"`
	XMLNS     string     `xml:"xmlns,attr"`
	Stacks    []cfnStack `xml:"DescribeStacksResult>Stacks>member"`
	RequestID string     `xml:"ResponseMetadata>RequestId"`
}

type cfnError struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	XMLNS     string   `xml:"xmlns,attr"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

func (cf *CloudFormation) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/":
		cf.t.Errorf("cloudformation: %s %s: the query protocol POSTs to /", r.Method, r.URL.Path)
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		cf.t.Errorf("cloudformation: Content-Type %q: want application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	case err != nil:
		cf.t.Errorf("cloudformation: body is not a form: %v", err)
	case form.Get("Version") != "2010-05-15":
		cf.t.Errorf("cloudformation: Version %q: want 2010-05-15", form.Get("Version"))
	case !strings.Contains(r.Header.Get("Authorization"), "/"+DefaultRegion+"/cloudformation/aws4_request"):
		cf.t.Errorf("cloudformation: Authorization %q: want SigV4 for cloudformation in %s", r.Header.Get("Authorization"), DefaultRegion)
	}
	cf.mu.Lock()
	cf.calls++
	st, ok := cf.stacks[form.Get("StackName")]
	cf.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	reqID := fmt.Sprintf("cfn-%d", time.Now().UnixNano())
	if form.Get("Action") != "DescribeStacks" {
		cf.t.Errorf("cloudformation: Action %q: this fake answers DescribeStacks only", form.Get("Action"))
		w.WriteHeader(http.StatusBadRequest)
		xml.NewEncoder(w).Encode(cfnError{XMLNS: cfnXMLNS, Type: "Sender", Code: "InvalidAction", Message: "not faked", RequestID: reqID})
		return
	}
	if !ok {
		// What CloudFormation answers for a stack that does not exist.
		w.WriteHeader(http.StatusBadRequest)
		xml.NewEncoder(w).Encode(cfnError{XMLNS: cfnXMLNS, Type: "Sender", Code: "ValidationError",
			Message: fmt.Sprintf("Stack with id %s does not exist", form.Get("StackName")), RequestID: reqID})
		return
	}
	out := cfnStack{
		StackName:    st.Name,
		StackId:      "arn:aws:cloudformation:" + DefaultRegion + ":123456789012:stack/" + st.Name + "/00000000-0000-0000-0000-000000000000",
		StackStatus:  cmpOr(st.Status, "CREATE_COMPLETE"),
		CreationTime: "2026-11-01T00:00:00.000Z",
	}
	for k, v := range st.Outputs {
		out.Outputs = append(out.Outputs, cfnOutput{OutputKey: k, OutputValue: v, Description: k})
	}
	for k, v := range st.Parameters {
		out.Parameters = append(out.Parameters, cfnParam{k, v})
	}
	io.WriteString(w, xml.Header)
	xml.NewEncoder(w).Encode(describeStacksResponse{XMLNS: cfnXMLNS, Stacks: []cfnStack{out}, RequestID: reqID})
}
