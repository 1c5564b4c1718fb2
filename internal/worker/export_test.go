package worker

// SetBeforePut makes w call f before each output's conditional write.
func (w *Worker) SetBeforePut(f func(key string)) { w.beforePut = f }
