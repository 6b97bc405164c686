package tail

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// fpMax is how many leading bytes make a file's fingerprint. With device
// and inode it tells a reused inode from the file it replaced.
const fpMax = 256

// FileID identifies a file by device and inode.
type FileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func fileID(fi os.FileInfo) (FileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileID{}, false
	}
	return FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}, true
}

// fingerprint is a hash of the first Len bytes of a file; Len grows with
// the file until fpMax.
type fingerprint struct {
	Len  int    `json:"fp_len"`
	Hash uint64 `json:"fp"`
}

func readFingerprint(r io.ReaderAt, n int) (fingerprint, error) {
	if n > fpMax {
		n = fpMax
	}
	var buf [fpMax]byte
	got, err := r.ReadAt(buf[:n], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fingerprint{}, err
	}
	h := fnv.New64a()
	h.Write(buf[:got])
	return fingerprint{Len: got, Hash: h.Sum64()}, nil
}

// position is one line of the positions file.
type position struct {
	Path string `json:"path"`
	FileID
	fingerprint
	Offset int64 `json:"offset"`
}

type positionsDoc struct {
	Version int        `json:"version"`
	Files   []position `json:"files"`
}

func loadPositions(path string) ([]position, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read positions %s: %w", path, err)
	}
	var doc positionsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("positions %s is not valid JSON (%v): move it away to start over", path, err)
	}
	return doc.Files, nil
}

// writePositions replaces path atomically: temp file, fsync, rename, fsync
// of the directory, so a crash leaves either the old or the new file.
func writePositions(path string, files []position) error {
	b, err := json.Marshal(positionsDoc{Version: 1, Files: files})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write positions: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write positions %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
