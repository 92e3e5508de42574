package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
)

// MaxBody bounds an admin request body.
const MaxBody = 1 << 20

// HTTPPrefix is the path every HTTP JSON call starts with; the method name
// follows: POST /causality.admin.v1.AdminService/CreateApp.
const HTTPPrefix = "/" + "causality.admin.v1.AdminService" + "/"

// NewHTTPHandler serves the AdminService's methods as protobuf JSON: POST
// HTTPPrefix+Method, body = the request, answer = the response, errors as
// {"code": "NOT_FOUND", "message": "..."} with the matching HTTP status.
// One handler for all methods, driven by the service descriptor. Callers
// need an admin token; mount it with mux.Handle("POST "+HTTPPrefix, h).
func NewHTTPHandler(svc adminv1.AdminServiceServer, tokens *Tokens) http.Handler {
	desc := adminv1.AdminService_ServiceDesc
	if HTTPPrefix != "/"+desc.ServiceName+"/" {
		panic("adminapi: HTTPPrefix does not match " + desc.ServiceName)
	}
	methods := make(map[string]grpc.MethodDesc, len(desc.Methods))
	for _, m := range desc.Methods {
		methods[m.MethodName] = m
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, HTTPPrefix)
		m, ok := methods[name]
		if !ok || name == r.URL.Path {
			writeError(w, status.Newf(codes.NotFound, "no method %q in %s", name, desc.ServiceName))
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeErrorStatus(w, http.StatusMethodNotAllowed, codes.InvalidArgument, "use POST")
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
				writeErrorStatus(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, fmt.Sprintf("content type %q: send application/json (protobuf JSON)", ct))
				return
			}
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeErrorStatus(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, fmt.Sprintf("request body over %d bytes", MaxBody))
				return
			}
			writeError(w, status.New(codes.InvalidArgument, "read request body: "+err.Error()))
			return
		}
		var decodeErr error
		dec := func(in any) error {
			if len(strings.TrimSpace(string(body))) == 0 {
				return nil // no body: the empty request
			}
			if decodeErr = protojson.Unmarshal(body, in.(proto.Message)); decodeErr != nil {
				return decodeErr
			}
			return nil
		}
		out, err := m.Handler(svc, r.Context(), dec, nil)
		if decodeErr != nil {
			writeError(w, status.Newf(codes.InvalidArgument, "bad JSON for %s: %v", name, decodeErr))
			return
		}
		if err != nil {
			writeError(w, status.Convert(err))
			return
		}
		b, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(out.(proto.Message))
		if err != nil {
			writeError(w, status.New(codes.Internal, "encode response: "+err.Error()))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store") // answers may carry secrets
		_, _ = w.Write(b)
	})
	return tokens.Middleware(h)
}

// httpStatus maps a gRPC code to an HTTP status, as grpc-gateway does.
var httpStatus = map[codes.Code]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           499,
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// codeNames are the canonical names of the gRPC codes.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// CodeName is the canonical name of a gRPC code: "NOT_FOUND".
func CodeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "UNKNOWN"
}

// ErrorBody is the JSON answer of a failed HTTP call.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, st *status.Status) {
	code, ok := httpStatus[st.Code()]
	if !ok {
		code = http.StatusInternalServerError
	}
	writeErrorStatus(w, code, st.Code(), st.Message())
}

func writeErrorStatus(w http.ResponseWriter, httpCode int, c codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpCode)
	_ = json.NewEncoder(w).Encode(ErrorBody{Code: CodeName(c), Message: msg})
}

// Register adds the AdminService to a gRPC server.
func Register(gs *grpc.Server, svc adminv1.AdminServiceServer) {
	adminv1.RegisterAdminServiceServer(gs, svc)
}
