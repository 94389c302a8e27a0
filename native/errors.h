// SPDX-License-Identifier: Apache-2.0
//
// Errors and argument checks. Every failing system or libbpf call becomes a
// BpfError (the class TypeScript registers through setErrorClass) with
// `code` ('ENOENT'), `errno` (2), `op` ("bpf_map_update_elem(fqe_allow)") and
// the message "<op>: <strerror> (<CODE>)". Wrong argument types throw a
// TypeError "<function>: <name> must be a <kind>". Nothing here decides policy.
#ifndef FQE_NATIVE_ERRORS_H
#define FQE_NATIVE_ERRORS_H

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace fqe
{

// Per-environment state (main thread and each worker have their own).
struct AddonData;
AddonData *GetAddonData(Napi::Env env);

// "ENOENT" for 2; kernel-internal codes that glibc does not name get a name
// from a small table, anything else "E<number>".
std::string ErrnoName(int err);

// Builds the error object (BpfError when registered, else Error).
Napi::Value MakeErrnoError(Napi::Env env, int err, const std::string &op, const std::string &details = std::string());

// Throws the error above as a C++ exception (NAPI_CPP_EXCEPTIONS).
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string &op, const std::string &details = std::string());

// libbpf returns -errno or sets errno; both normalised to a positive errno.
inline int PositiveErrno(long ret)
{
	if (ret < 0 && ret != -1)
		return static_cast<int>(-ret);
	return errno ? errno : EINVAL;
}

[[noreturn]] inline void ThrowType(Napi::Env env, const char *fn, const char *name, const char *kind)
{
	throw Napi::TypeError::New(env, std::string(fn) + ": " + name + " must be " + kind);
}

[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string &msg)
{
	throw Napi::RangeError::New(env, msg);
}

// Argument readers. `fn` is the JavaScript name of the function.
inline std::string ToStringArg(Napi::Env env, Napi::Value v, const char *fn, const char *name)
{
	if (!v.IsString())
		ThrowType(env, fn, name, "a string");
	return v.As<Napi::String>().Utf8Value();
}

inline int64_t ToIntArg(Napi::Env env, Napi::Value v, const char *fn, const char *name, int64_t min, int64_t max)
{
	if (!v.IsNumber())
		ThrowType(env, fn, name, "a number");
	double d = v.As<Napi::Number>().DoubleValue();
	if (!std::isfinite(d) || std::trunc(d) != d)
		ThrowType(env, fn, name, "an integer");
	if (d < static_cast<double>(min) || d > static_cast<double>(max))
		ThrowRange(env, std::string(fn) + ": " + name + " must be between " + std::to_string(min) + " and " +
					std::to_string(max));
	return static_cast<int64_t>(d);
}

inline Napi::Buffer<uint8_t> ToBufferArg(Napi::Env env, Napi::Value v, const char *fn, const char *name)
{
	if (!v.IsBuffer())
		ThrowType(env, fn, name, "a Buffer");
	return v.As<Napi::Buffer<uint8_t>>();
}

inline Napi::Object ToObjectArg(Napi::Env env, Napi::Value v, const char *fn, const char *name)
{
	if (!v.IsObject() || v.IsFunction() || v.IsArray())
		ThrowType(env, fn, name, "an object");
	return v.As<Napi::Object>();
}

inline Napi::Function ToFunctionArg(Napi::Env env, Napi::Value v, const char *fn, const char *name)
{
	if (!v.IsFunction())
		ThrowType(env, fn, name, "a function");
	return v.As<Napi::Function>();
}

inline bool IsAbsent(Napi::Value v)
{
	return v.IsUndefined() || v.IsNull();
}

} // namespace fqe

// Positional and option-field argument checks with exact messages, e.g.
// "TypeError: loadObject: path must be a string".
#define FQE_ARG_STRING(fn, i, name)	   ::fqe::ToStringArg(info.Env(), info[i], fn, name)
#define FQE_ARG_INT(fn, i, name, min, max) ::fqe::ToIntArg(info.Env(), info[i], fn, name, min, max)
#define FQE_ARG_FD(fn, i)		   static_cast<int>(FQE_ARG_INT(fn, i, "fd", INT32_MIN, INT32_MAX))
#define FQE_ARG_U32(fn, i, name)	   static_cast<uint32_t>(FQE_ARG_INT(fn, i, name, 0, UINT32_MAX))
#define FQE_ARG_BUFFER(fn, i, name)	   ::fqe::ToBufferArg(info.Env(), info[i], fn, name)
#define FQE_ARG_OBJECT(fn, i, name)	   ::fqe::ToObjectArg(info.Env(), info[i], fn, name)
#define FQE_ARG_FUNCTION(fn, i, name)	   ::fqe::ToFunctionArg(info.Env(), info[i], fn, name)
// Optional positional: absent (undefined/null) gives `dflt`.
#define FQE_ARG_U32_OR(fn, i, name, dflt)                                                                              \
	(::fqe::IsAbsent(info[i]) ? static_cast<uint32_t>(dflt) : FQE_ARG_U32(fn, i, name))

#define FQE_OPT_STRING(fn, obj, field)	      ::fqe::ToStringArg(info.Env(), (obj).Get(field), fn, field)
#define FQE_OPT_INT(fn, obj, field, min, max) ::fqe::ToIntArg(info.Env(), (obj).Get(field), fn, field, min, max)
#define FQE_OPT_U32(fn, obj, field)	      static_cast<uint32_t>(FQE_OPT_INT(fn, obj, field, 0, UINT32_MAX))
// Optional string field: absent gives "".
#define FQE_OPT_STRING_OR_EMPTY(fn, obj, field)                                                                        \
	(::fqe::IsAbsent((obj).Get(field)) ? std::string() : FQE_OPT_STRING(fn, obj, field))

#endif // FQE_NATIVE_ERRORS_H
