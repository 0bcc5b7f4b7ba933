#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int benchRank = -1;

static void printWho(void) {
  if (benchRank >= 0) fprintf(stderr, "rank %d: ", benchRank);
}

void benchReportCuda(cudaError_t error, const char* call, const char* file, int line) {
  printWho();
  fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", file, line, call, cudaGetErrorName(error),
          cudaGetErrorString(error));
}

void benchReportNccl(ncclResult_t result, const char* call, const char* file, int line) {
  printWho();
  fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", file, line, call, ncclGetErrorString(result),
          ncclGetLastError(NULL));
}

void benchReportUlysses(ulyssesResult_t result, const char* call, const char* file, int line) {
  printWho();
  fprintf(stderr, "%s:%d: %s failed: %s: %s\n", file, line, call, ulyssesGetErrorString(result),
          ulyssesGetLastError());
}

void benchReportFailure(const char* file, int line, const char* format, ...) {
  printWho();
  fprintf(stderr, "%s:%d: ", file, line);
  va_list args;
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
  fputc('\n', stderr);
}

int benchIsHelp(const char* arg) { return arg[0] == '-' && arg[1] == 'h' && arg[2] == '\0'; }

const char* benchFlagValue(int argc, char** argv, int* i) {
  const char* arg = argv[*i];
  if (arg[0] != '-' || arg[1] == '\0') {
    fprintf(stderr, "%s: unexpected argument '%s' (-h for help)\n", argv[0], arg);
    return NULL;
  }
  const char* value = arg[2] != '\0' ? arg + 2 : (*i + 1 < argc ? argv[++*i] : NULL);
  if (value == NULL) fprintf(stderr, "%s: %s needs a value (-h for help)\n", argv[0], arg);
  return value;
}

int benchCountGpus(const char* program) {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error == cudaSuccess && count > 0) return count;
  fprintf(stderr, "%s: no CUDA device found; the benchmark needs a GPU\n", program);
  if (error != cudaSuccess)
    fprintf(stderr, "%s: (cudaGetDeviceCount: %s: %s)\n", program, cudaGetErrorName(error),
            cudaGetErrorString(error));
  return 0;
}

int benchParseSize(const char* text, int64_t* value) {
  char* end = NULL;
  errno = 0;
  long long number = strtoll(text, &end, 10);
  if (end == text || errno != 0 || number < 0) return 1;
  int64_t unit = 1;
  switch (*end) {
    case '\0': break;
    case 'k': case 'K': unit = (int64_t)1 << 10; end++; break;
    case 'm': case 'M': unit = (int64_t)1 << 20; end++; break;
    case 'g': case 'G': unit = (int64_t)1 << 30; end++; break;
    default: return 1;
  }
  if (*end != '\0') return 1;
  if (__builtin_mul_overflow((int64_t)number, unit, value)) return 1;
  return 0;
}

int benchParseInt(const char* text, int64_t min, int64_t max, int64_t* value) {
  char* end = NULL;
  errno = 0;
  long long number = strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || number < min || number > max) return 1;
  *value = number;
  return 0;
}

int benchParseIntList(const char* text, int64_t min, int64_t max, int64_t* values, int maxValues) {
  int count = 0;
  const char* cursor = text;
  for (;;) {
    char* end = NULL;
    errno = 0;
    long long number = strtoll(cursor, &end, 10);
    if (end == cursor || errno != 0 || number < min || number > max || count == maxValues) return 0;
    values[count++] = number;
    if (*end == '\0') return count;
    if (*end != ',') return 0;
    cursor = end + 1;
  }
}

typedef struct {
  const char* name;
  int size;
} typeEntry;

static const typeEntry types[] = {
    {"int8", 1},  {"uint8", 1},  {"fp8", 1},    {"fp8_e4m3", 1}, {"fp8_e5m2", 1},
    {"bf16", 2},  {"fp16", 2},   {"half", 2},   {"int16", 2},    {"fp32", 4},
    {"float", 4}, {"int32", 4},  {"uint32", 4}, {"fp64", 8},     {"double", 8},
    {"int64", 8}, {"uint64", 8}, {"b128", 16},
};

const char benchTypeNames[] =
    "int8 uint8 fp8 fp8_e4m3 fp8_e5m2 (1 byte), bf16 fp16 half int16 (2), "
    "fp32 float int32 uint32 (4), fp64 double int64 uint64 (8), b128 (16)";

int benchTypeSize(const char* name) {
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcmp(types[i].name, name) == 0) return types[i].size;
  return 0;
}

double benchCountWrong(const unsigned char* got, const unsigned char* expected, size_t bytes,
                       int elementSize) {
  if (memcmp(got, expected, bytes) == 0) return 0;
  double wrong = 0;
  for (size_t i = 0; i < bytes; i += (size_t)elementSize)
    if (memcmp(got + i, expected + i, (size_t)elementSize) != 0) wrong++;
  return wrong;
}

const char* benchFormatBytes(double bytes, char* text, size_t capacity) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    unit++;
  }
  if (unit == 0)
    snprintf(text, capacity, "%.0f B", bytes);
  else
    snprintf(text, capacity, "%.2f %s", bytes, units[unit]);
  return text;
}

void benchJsonString(FILE* file, const char* text) {
  fputc('"', file);
  for (const unsigned char* c = (const unsigned char*)text; *c != '\0'; c++) {
    if (*c == '"' || *c == '\\')
      fprintf(file, "\\%c", *c);
    else if (*c < 0x20)
      fprintf(file, "\\u%04x", *c);
    else
      fputc(*c, file);
  }
  fputc('"', file);
}

void benchNcclVersionText(int code, char* text, size_t capacity) {
  if (code >= 10000)
    snprintf(text, capacity, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
  else
    snprintf(text, capacity, "%d.%d.%d", code / 1000, code / 100 % 10, code % 100);
}

void benchCudaVersionText(int code, char* text, size_t capacity) {
  snprintf(text, capacity, "%d.%d", code / 1000, code % 1000 / 10);
}

int benchCheckSweep(const char* program, int64_t minLength, int64_t maxLength) {
  if (maxLength >= minLength) return 0;
  fprintf(stderr, "%s: -e %lld is below -b %lld\n", program, (long long)maxLength,
          (long long)minLength);
  return 1;
}

int benchOpenDevice(benchDevice* device, int64_t index, int64_t flushMiB, const char* jsonPath) {
  memset(device, 0, sizeof *device);
  device->index = index;
  CUDACHECK(cudaSetDevice((int)index));
  CUDACHECK(cudaGetDeviceProperties(&device->properties, (int)index));
  snprintf(device->name, sizeof device->name, "%s", device->properties.name);
  int driver = 0, runtime = 0;
  CUDACHECK(cudaDriverGetVersion(&driver));
  CUDACHECK(cudaRuntimeGetVersion(&runtime));
  benchCudaVersionText(driver, device->driverText, sizeof device->driverText);
  benchCudaVersionText(runtime, device->runtimeText, sizeof device->runtimeText);
  device->flushBytes = (size_t)flushMiB << 20;
  if (device->flushBytes < 4 * (size_t)device->properties.l2CacheSize)
    device->flushBytes = 4 * (size_t)device->properties.l2CacheSize;
  CUDACHECK(cudaStreamCreateWithFlags(&device->stream, cudaStreamNonBlocking));
  CUDACHECK(cudaMalloc(&device->flush, device->flushBytes));
  if (jsonPath != NULL) {
    device->json = fopen(jsonPath, "w");
    if (device->json == NULL) {
      benchReportFailure(__FILE__, __LINE__, "cannot open %s for writing", jsonPath);
      return 1;
    }
  }
  return 0;
}

int benchCloseDevice(benchDevice* device) {
  if (device->json != NULL) fclose(device->json);
  device->json = NULL;
  CUDACHECK(cudaFree(device->flush));
  CUDACHECK(cudaStreamDestroy(device->stream));
  return 0;
}

void benchPrintDevice(const benchDevice* device) {
  char l2Text[32], flushText[32];
  printf("# GPU %lld: %s, %d SMs, L2 %s; flush %s before every timed call\n",
         (long long)device->index, device->name, device->properties.multiProcessorCount,
         benchFormatBytes((double)device->properties.l2CacheSize, l2Text, sizeof l2Text),
         benchFormatBytes((double)device->flushBytes, flushText, sizeof flushText));
}

int benchTimeCall(const benchDevice* device, const benchTimedCall* timed, double* callMs,
                  double* copyMs) {
  int64_t n = timed->iterations;
  cudaStream_t stream = device->stream;
  cudaEvent_t* events = malloc(sizeof(cudaEvent_t) * (size_t)(4 * n));
  HOSTCHECK(events);
  for (int64_t i = 0; i < 4 * n; i++) CUDACHECK(cudaEventCreate(&events[i]));
  for (int64_t i = 0; i < timed->warmups; i++) {
    CUDACHECK(cudaMemcpyAsync(timed->destination, timed->source, timed->bytes,
                              cudaMemcpyDeviceToDevice, stream));
    BENCHCHECK(timed->run(timed->call, stream));
  }
  for (int64_t i = 0; i < n; i++) {
    CUDACHECK(cudaMemsetAsync(device->flush, (int)(i & 0xff), device->flushBytes, stream));
    CUDACHECK(cudaEventRecord(events[4 * i], stream));
    CUDACHECK(cudaMemcpyAsync(timed->destination, timed->source, timed->bytes,
                              cudaMemcpyDeviceToDevice, stream));
    CUDACHECK(cudaEventRecord(events[4 * i + 1], stream));
    CUDACHECK(cudaMemsetAsync(device->flush, (int)((i + 1) & 0xff), device->flushBytes, stream));
    CUDACHECK(cudaEventRecord(events[4 * i + 2], stream));
    BENCHCHECK(timed->run(timed->call, stream));
    CUDACHECK(cudaEventRecord(events[4 * i + 3], stream));
  }
  CUDACHECK(cudaStreamSynchronize(stream));
  for (int64_t i = 0; i < n; i++) {
    float milliseconds = 0;
    CUDACHECK(cudaEventElapsedTime(&milliseconds, events[4 * i], events[4 * i + 1]));
    copyMs[i] = milliseconds;
    CUDACHECK(cudaEventElapsedTime(&milliseconds, events[4 * i + 2], events[4 * i + 3]));
    callMs[i] = milliseconds;
  }
  for (int64_t i = 0; i < 4 * n; i++) CUDACHECK(cudaEventDestroy(events[i]));
  free(events);
  return 0;
}
