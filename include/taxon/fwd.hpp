#pragma once
// Declarations of taxon's main public types, for code that only names them (references, pointers, function
// declarations in a header): this header includes nothing, while every header that defines them pulls in LibTorch.
// Class templates whose parameters are constrained by concepts (Loader, Subset, PartialFC, Trainer) cannot be
// declared without their concepts; include their headers.

namespace taxon {
class Error;
class Progress;
struct EmbedOptions;
}  // namespace taxon

namespace taxon::log {
enum class Level;
}  // namespace taxon::log

namespace taxon::cpu {
enum class Isa;
}  // namespace taxon::cpu

namespace taxon::io {
struct SafetensorsFile;
}  // namespace taxon::io

namespace taxon::data {
struct Sample;
struct Batch;
class AnyDataset;
class CsvTable;
class LabelMap;
class Taxonomy;
class IdxDatasetOptions;
class IdxDataset;
class ImageFileDataset;
struct RankSpec;
struct CsvSource;
class CsvImageDatasetOptions;
class CsvImageDataset;
class ImageFolderDatasetOptions;
class ImageFolderDataset;
enum class MissingFilePolicy;
class EmbeddingDataset;
class Compose;
class LoaderOptions;
enum class ErrorPolicy;
struct Split;
enum class Singletons;
}  // namespace taxon::data

namespace taxon::backbone {
enum class Layout;
enum class Activation;
struct VisionTransformerOptions;
class VisionTransformerImpl;
class VisionTransformer;
struct InferOptions;
struct LoadReport;
}  // namespace taxon::backbone

namespace taxon::loss {
enum class GradMode;
enum class Impl;
struct MarginParams;
struct ArcFaceOptions;
struct ArcFace;
struct CosFaceOptions;
struct CosFace;
struct SphereFaceOptions;
struct SphereFace;
struct CombinedOptions;
struct Combined;
struct FusedOptions;
}  // namespace taxon::loss

namespace taxon::dist {
struct ClassShard;
}  // namespace taxon::dist

namespace taxon::pfc {
struct PartialFCOptions;
struct ClassSample;
struct AllClasses;
struct UniformNegatives;
}  // namespace taxon::pfc

namespace taxon::cluster {
enum class KMeansBackend;
enum class KMeansInit;
enum class Combine;
struct KMeansOptions;
struct KMeansResult;
struct ClusterStats;
class KMeans;
}  // namespace taxon::cluster

namespace taxon::eval {
enum class KnnBackend;
enum class KnnMetric;
struct KnnOptions;
struct KnnResult;
class KnnIndex;
struct RetrievalOptions;
struct RetrievalMetrics;
struct TaxonomyColumns;
struct TaxonomyEvalOptions;
struct TaxonomyTable;
class TaxonomyEvaluator;
}  // namespace taxon::eval

namespace taxon::train {
enum class Precision;
struct GradScalerOptions;
class GradScaler;
struct OneCycleOptions;
class Schedule;
struct StepReport;
struct TrainerOptions;
struct TrainSummary;
class ProgressBar;
class MetricsLog;
class Checkpointing;
class EarlyStop;
class StopFlag;
}  // namespace taxon::train
