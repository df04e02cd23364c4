// taxon/fwd.hpp declares the types that the full headers define: same name, namespace and kind. A declaration that
// drifts (a type renamed or moved) stays incomplete here and fails the build; a kind mismatch is a compile error.
#include "taxon/fwd.hpp"
#include "taxon/taxon.hpp"

#include <catch2/catch.hpp>

namespace test_fwd {

template <typename T>
constexpr bool complete = requires { sizeof(T); };

template <typename... T>
constexpr bool all_complete = (complete<T> && ...);

}  // namespace test_fwd

TEST_CASE("fwd.hpp declares only types the headers define", "[fwd]") {
  using namespace taxon;
  using test_fwd::all_complete;
  STATIC_REQUIRE(all_complete<Error, Progress, EmbedOptions, io::SafetensorsFile>);
  STATIC_REQUIRE(all_complete<data::Sample, data::Batch, data::AnyDataset, data::CsvTable, data::LabelMap,
                              data::Taxonomy, data::IdxDatasetOptions, data::IdxDataset, data::ImageFileDataset,
                              data::RankSpec, data::CsvSource, data::CsvImageDatasetOptions, data::CsvImageDataset,
                              data::ImageFolderDatasetOptions, data::ImageFolderDataset, data::EmbeddingDataset,
                              data::Compose, data::LoaderOptions, data::Split>);
  STATIC_REQUIRE(all_complete<backbone::VisionTransformerOptions, backbone::VisionTransformerImpl,
                              backbone::VisionTransformer, backbone::InferOptions, backbone::LoadReport>);
  STATIC_REQUIRE(all_complete<loss::MarginParams, loss::ArcFaceOptions, loss::ArcFace, loss::CosFaceOptions,
                              loss::CosFace, loss::SphereFaceOptions, loss::SphereFace, loss::CombinedOptions,
                              loss::Combined, loss::FusedOptions, dist::ClassShard>);
  STATIC_REQUIRE(all_complete<pfc::PartialFCOptions, pfc::ClassSample, pfc::AllClasses, pfc::UniformNegatives>);
  STATIC_REQUIRE(all_complete<cluster::KMeansOptions, cluster::KMeansResult, cluster::ClusterStats, cluster::KMeans>);
  STATIC_REQUIRE(all_complete<eval::KnnOptions, eval::KnnResult, eval::KnnIndex, eval::RetrievalOptions,
                              eval::RetrievalMetrics, eval::TaxonomyColumns, eval::TaxonomyEvalOptions,
                              eval::TaxonomyTable, eval::TaxonomyEvaluator>);
  STATIC_REQUIRE(all_complete<train::GradScalerOptions, train::GradScaler, train::OneCycleOptions, train::Schedule,
                              train::StepReport, train::TrainerOptions, train::TrainSummary, train::ProgressBar,
                              train::MetricsLog, train::Checkpointing, train::EarlyStop, train::StopFlag>);
  // An opaque enum declaration is complete on its own: naming an enumerator proves the definition is the same enum.
  STATIC_REQUIRE(static_cast<int>(log::Level::info) == 1);
  STATIC_REQUIRE(cpu::Isa::baseline != cpu::Isa::avx2);
  STATIC_REQUIRE(data::MissingFilePolicy::skip != data::MissingFilePolicy::reject);
  STATIC_REQUIRE(data::ErrorPolicy::skip != data::ErrorPolicy::reject);
  STATIC_REQUIRE(data::Singletons::train != data::Singletons::drop);
  STATIC_REQUIRE(backbone::Layout::clip != backbone::Layout::unicom);
  STATIC_REQUIRE(backbone::Activation::gelu != backbone::Activation::relu6);
  STATIC_REQUIRE(loss::GradMode::exact != loss::GradMode::straight_through);
  STATIC_REQUIRE(loss::Impl::fused != loss::Impl::reference);
  STATIC_REQUIRE(cluster::KMeansBackend::faiss != cluster::KMeansBackend::torch);
  STATIC_REQUIRE(cluster::KMeansInit::random != cluster::KMeansInit::kmeans_plus_plus);
  STATIC_REQUIRE(cluster::Combine::mean != cluster::Combine::concat);
  STATIC_REQUIRE(eval::KnnBackend::faiss != eval::KnnBackend::torch);
  STATIC_REQUIRE(eval::KnnMetric::inner_product != eval::KnnMetric::l2);
  STATIC_REQUIRE(train::Precision::fp32 != train::Precision::bf16);
}
