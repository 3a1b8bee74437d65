"""Evaluation that works offline: FID, KID, an Inception-Score analogue and improved precision/recall on a
shipped feature network per dataset, bits/dim in one format for every family with a likelihood bound, and
the tables that report them.

    from elbolab.evaluate import evaluate_samples, Metric
    result = evaluate_samples(samples, "mnist", {Metric.FID, Metric.KID, Metric.IS, Metric.PR})
    result.fid.fid, result.kid.mean, result.kid.stderr, result.inception.mean, result.pr.recall
"""

from elbolab.evaluate.bpd import BitsPerDim, BPDAccumulator, BPDMethod, diffusion_bound_fn, summarize_bpd
from elbolab.evaluate.features import (FeatureDataset, FeatureNet, FeatureNetConfig, FeatureNetwork, FeatureOutput,
                                       WeightsHashError, load_feature_network)
from elbolab.evaluate.fid import (FeatureStats, FIDResult, StatsAccumulator, feature_stats, fid_from_features,
                                  frechet_distance, sqrtm_psd, trace_sqrt_product)
from elbolab.evaluate.inception_score import ConfidenceResult, ISResult, confident_fraction, inception_score
from elbolab.evaluate.kid import KIDResult, kid_from_features, mmd2_unbiased, polynomial_kernel
from elbolab.evaluate.pipeline import (EvalResult, EvalSettings, Metric, classifier_confidence, evaluate_bpd,
                                       evaluate_folder, evaluate_samples, parse_metrics)
from elbolab.evaluate.precision_recall import PRResult, precision_recall
from elbolab.evaluate.reference import ExtractedFeatures, Reference, extract_features, load_reference
from elbolab.evaluate.report import (QualityRow, format_eval_table, format_quality_table, result_to_dict,
                                     write_metrics_json)
from elbolab.evaluate.samples import (SampleBatch, SampleSet, draw_in_batches, generate_samples, load_samples_npz,
                                      save_samples_npz)

__all__ = [
    "BitsPerDim", "BPDAccumulator", "BPDMethod", "diffusion_bound_fn", "summarize_bpd",
    "FeatureDataset", "FeatureNet", "FeatureNetConfig", "FeatureNetwork", "FeatureOutput", "WeightsHashError",
    "load_feature_network",
    "FeatureStats", "FIDResult", "StatsAccumulator", "feature_stats", "fid_from_features", "frechet_distance",
    "sqrtm_psd", "trace_sqrt_product",
    "ConfidenceResult", "ISResult", "confident_fraction", "inception_score",
    "KIDResult", "kid_from_features", "mmd2_unbiased", "polynomial_kernel",
    "EvalResult", "EvalSettings", "Metric", "classifier_confidence", "evaluate_bpd", "evaluate_folder", "evaluate_samples", "parse_metrics",
    "PRResult", "precision_recall",
    "ExtractedFeatures", "Reference", "extract_features", "load_reference",
    "QualityRow", "format_eval_table", "format_quality_table", "result_to_dict", "write_metrics_json",
    "SampleBatch", "SampleSet", "draw_in_batches", "generate_samples", "load_samples_npz", "save_samples_npz",
]
