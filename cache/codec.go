package cache

import "encoding/json"

// Codec turns cached values into bytes and back. Unmarshal must not keep
// data after it returns (the slice may be the store's own), and must decode
// the same bytes to the same value: a Cache may decode bytes once and copy
// the value for later hits that fetch the same bytes.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default Codec: encoding/json.
type JSONCodec struct{}

// Marshal is json.Marshal.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal is json.Unmarshal.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
