package ssmtest

// Error is an error response: JSON for SSM, XML for EC2.
type Error struct {
	Status  int
	Code    string // may carry a namespace: "com.amazonaws.ssm#InvalidDocument"
	Message string
}

// Fault decides whether the n-th call (1-based, counted per operation
// over the server's life) of op fails, and with what error; nil lets the
// call through.
type Fault func(op string, n int) *Error

// FailTimes returns a Fault that fails the first times calls of op with
// e, every call when times is negative.
func FailTimes(op string, times int, e *Error) Fault {
	return func(o string, n int) *Error {
		if o == op && (times < 0 || n <= times) {
			return e
		}
		return nil
	}
}

// Throttled is the error each service sends when it throttles op.
func Throttled(op string) *Error {
	if op == "DescribeInstances" || op == "StartInstances" {
		return &Error{503, "RequestLimitExceeded", "Request limit exceeded."}
	}
	return &Error{400, "ThrottlingException", "Rate exceeded"}
}

// InvalidInstanceID is what SendCommand answers for an instance that is
// unknown, stopped or whose agent is not connected.
func InvalidInstanceID(id string) *Error {
	return &Error{400, "InvalidInstanceId", "Instances [[" + id + "]] not in a valid state for account 123456789012"}
}
