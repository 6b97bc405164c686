//go:build !linux

package tail

func (t *Tailer) watchDirs() func() { return func() {} }
