package jobstore

// LogPrefix is where the state bucket keeps job logs: a worker that runs
// away from the client (`worker run` on EC2) uploads a job's log there
// when each attempt ends, so `conveyor logs` can read it from anywhere.
const LogPrefix = "logs/"

// LogKey is the key of job id's log in the state bucket.
func LogKey(id string) string { return LogPrefix + id + ".log" }
