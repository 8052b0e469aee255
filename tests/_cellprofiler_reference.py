"""CellProfiler 4.2.8's MeasureColocalization object-mode code and its Threshold / MorphologicalSkeleton /
MeasureObjectSkeleton code (the JUMP mito skeleton, second part below), verbatim, as a test reference.

Source: github.com/CellProfiler/CellProfiler, tag v4.2.8 (commit
2df090ff281cff80943fe679a1c3192fbda9cd6d), cellprofiler/modules/measurecolocalization.py:
``MeasureColocalization.run_image_pair_objects``, ``linear_costes``, ``bisection_costes`` and
``get_scale`` are copied unchanged below (CellProfiler 4.2.8 itself does not install on Python 3.11).
Only the glue is ours: a minimal workspace (images with ``pixel_data``/``mask``/``scale``, objects with
``segmented``/``count``, a measurement store), the module's settings as plain attributes, and a
``numpy`` namespace that maps the names NumPy 2 removed (``numpy.product``, ``numpy.NaN``) to their
current equivalents; ``fix`` is centrosome's ``fixup_scipy_ndimage_result`` as in the module.

CellProfiler licence (BSD 3-Clause), as distributed with the source:

    Copyright (c) 2003 - 2021 Broad Institute, Inc. All rights reserved.

    Redistribution and use in source and binary forms, with or without modification, are permitted
    provided that the following conditions are met:
    1. Redistributions of source code must retain the above copyright notice, this list of
       conditions and the following disclaimer.
    2. Redistributions in binary form must reproduce the above copyright notice, this list of
       conditions and the following disclaimer in the documentation and/or other materials provided
       with the distribution.
    3. Neither the name of the Broad Institute, Inc. nor the names of its contributors may be used to
       endorse or promote products derived from this software without specific prior written
       permission.

    THIS SOFTWARE IS PROVIDED "AS IS." BROAD MAKES NO EXPRESS OR IMPLIED REPRESENTATIONS OR
    WARRANTIES OF ANY KIND REGARDING THE SOFTWARE AND COPYRIGHT, INCLUDING, BUT NOT LIMITED TO,
    WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE, CONFORMITY WITH ANY
    DOCUMENTATION, NON-INFRINGEMENT, OR THE ABSENCE OF LATENT OR OTHER DEFECTS, WHETHER OR NOT
    DISCOVERABLE. IN NO EVENT SHALL BROAD, THE COPYRIGHT HOLDERS, OR CONTRIBUTORS BE LIABLE FOR ANY
    DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
    LIMITED TO PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
    INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
    OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE,
    EVEN IF ADVISED OF, HAVE REASON TO KNOW, OR IN THE ABSENCE OF ANY SUCH DAMAGES.
"""
# ruff: noqa
# fmt: off

from __future__ import annotations

import types
import warnings

import numpy as _np
import scipy.ndimage
import scipy.stats
from centrosome.cpmorphology import fixup_scipy_ndimage_result as fix

numpy = types.SimpleNamespace(**{k: getattr(_np, k) for k in dir(_np) if not k.startswith("__")})
numpy.product = _np.prod
numpy.NaN = _np.nan

M_FAST = "Fast"
M_FASTER = "Faster"
M_ACCURATE = "Accurate"
F_CORRELATION_FORMAT = "Correlation_Correlation_%s_%s"
F_OVERLAP_FORMAT = "Correlation_Overlap_%s_%s"
F_K_FORMAT = "Correlation_K_%s_%s"
F_MANDERS_FORMAT = "Correlation_Manders_%s_%s"
F_RWC_FORMAT = "Correlation_RWC_%s_%s"
F_COSTES_FORMAT = "Correlation_Costes_%s_%s"


class _Value(str):
    @property
    def value(self):
        return str(self)


class _Thr:
    value = 15.0


class _Image:
    def __init__(self, pixels, scale):
        self.pixel_data = pixels
        self.mask = _np.ones(pixels.shape, bool)
        self.scale = scale

    def crop_image_similarly(self, image):
        return image


class _Objects:
    def __init__(self, labels):
        self.segmented = labels
        self.count = int(labels.max())

    def crop_image_similarly(self, image):
        return image


class _Workspace:
    def __init__(self, images, labels):
        self.image_set = types.SimpleNamespace(get_image=lambda name, must_be_grayscale=True: images[name])
        self.object_set = types.SimpleNamespace(get_objects=lambda name: _Objects(labels))
        self.store = {}
        self.measurements = types.SimpleNamespace(
            add_measurement=lambda obj, name, values: self.store.__setitem__(name, _np.asarray(values, float)))


class MeasureColocalization:
    """The settings of a default CellProfiler 4.2.8 module with every measurement and the Faster Costes."""
    thr = _Thr()
    do_corr_and_slope = True
    do_manders = True
    do_rwc = True
    do_overlap = True
    do_costes = True
    fast_costes = _Value(M_FASTER)

    def run_image_pair_objects(
        self, workspace, first_image_name, second_image_name, object_name
    ):
        """Calculate per-object correlations between intensities in two images"""
        first_image = workspace.image_set.get_image(
            first_image_name, must_be_grayscale=True
        )
        second_image = workspace.image_set.get_image(
            second_image_name, must_be_grayscale=True
        )
        objects = workspace.object_set.get_objects(object_name)
        #
        # Crop both images to the size of the labels matrix
        #
        labels = objects.segmented
        try:
            first_pixels = objects.crop_image_similarly(first_image.pixel_data)
            first_mask = objects.crop_image_similarly(first_image.mask)
        except ValueError:
            first_pixels, m1 = size_similarly(labels, first_image.pixel_data)
            first_mask, m1 = size_similarly(labels, first_image.mask)
            first_mask[~m1] = False
        try:
            second_pixels = objects.crop_image_similarly(second_image.pixel_data)
            second_mask = objects.crop_image_similarly(second_image.mask)
        except ValueError:
            second_pixels, m1 = size_similarly(labels, second_image.pixel_data)
            second_mask, m1 = size_similarly(labels, second_image.mask)
            second_mask[~m1] = False
        mask = (labels > 0) & first_mask & second_mask
        first_pixels = first_pixels[mask]
        second_pixels = second_pixels[mask]
        labels = labels[mask]
        result = []
        first_pixel_data = first_image.pixel_data
        first_mask = first_image.mask
        first_pixel_count = numpy.product(first_pixel_data.shape)
        second_pixel_data = second_image.pixel_data
        second_mask = second_image.mask
        second_pixel_count = numpy.product(second_pixel_data.shape)
        #
        # Crop the larger image similarly to the smaller one
        #
        if first_pixel_count < second_pixel_count:
            second_pixel_data = first_image.crop_image_similarly(second_pixel_data)
            second_mask = first_image.crop_image_similarly(second_mask)
        elif second_pixel_count < first_pixel_count:
            first_pixel_data = second_image.crop_image_similarly(first_pixel_data)
            first_mask = second_image.crop_image_similarly(first_mask)
        mask = (
            first_mask
            & second_mask
            & (~numpy.isnan(first_pixel_data))
            & (~numpy.isnan(second_pixel_data))
        )
        if numpy.any(mask):
            fi = first_pixel_data[mask]
            si = second_pixel_data[mask]

        n_objects = objects.count
        # Handle case when both images for the correlation are completely masked out

        if n_objects == 0:
            corr = numpy.zeros((0,))
            overlap = numpy.zeros((0,))
            K1 = numpy.zeros((0,))
            K2 = numpy.zeros((0,))
            M1 = numpy.zeros((0,))
            M2 = numpy.zeros((0,))
            RWC1 = numpy.zeros((0,))
            RWC2 = numpy.zeros((0,))
            C1 = numpy.zeros((0,))
            C2 = numpy.zeros((0,))
        elif numpy.where(mask)[0].__len__() == 0:
            corr = numpy.zeros((n_objects,))
            corr[:] = numpy.NaN
            overlap = K1 = K2 = M1 = M2 = RWC1 = RWC2 = C1 = C2 = corr
        else:
            lrange = numpy.arange(n_objects, dtype=numpy.int32) + 1

            if self.do_corr_and_slope:
                #
                # The correlation is sum((x-mean(x))(y-mean(y)) /
                #                         ((n-1) * std(x) *std(y)))
                #

                mean1 = fix(scipy.ndimage.mean(first_pixels, labels, lrange))
                mean2 = fix(scipy.ndimage.mean(second_pixels, labels, lrange))
                #
                # Calculate the standard deviation times the population.
                #
                std1 = numpy.sqrt(
                    fix(
                        scipy.ndimage.sum(
                            (first_pixels - mean1[labels - 1]) ** 2, labels, lrange
                        )
                    )
                )
                std2 = numpy.sqrt(
                    fix(
                        scipy.ndimage.sum(
                            (second_pixels - mean2[labels - 1]) ** 2, labels, lrange
                        )
                    )
                )
                x = first_pixels - mean1[labels - 1]  # x - mean(x)
                y = second_pixels - mean2[labels - 1]  # y - mean(y)
                corr = fix(
                    scipy.ndimage.sum(
                        x * y / (std1[labels - 1] * std2[labels - 1]), labels, lrange
                    )
                )
                # Explicitly set the correlation to NaN for masked objects
                corr[scipy.ndimage.sum(1, labels, lrange) == 0] = numpy.NaN
                result += [
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Mean Correlation coeff",
                        "%.3f" % numpy.mean(corr),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Median Correlation coeff",
                        "%.3f" % numpy.median(corr),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Min Correlation coeff",
                        "%.3f" % numpy.min(corr),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Max Correlation coeff",
                        "%.3f" % numpy.max(corr),
                    ],
                ]

            if any((self.do_manders, self.do_rwc, self.do_overlap)):
                # Threshold as percentage of maximum intensity of objects in each channel
                tff = (self.thr.value / 100) * fix(
                    scipy.ndimage.maximum(first_pixels, labels, lrange)
                )
                tss = (self.thr.value / 100) * fix(
                    scipy.ndimage.maximum(second_pixels, labels, lrange)
                )

                combined_thresh = (first_pixels >= tff[labels - 1]) & (
                    second_pixels >= tss[labels - 1]
                )
                fi_thresh = first_pixels[combined_thresh]
                si_thresh = second_pixels[combined_thresh]
                tot_fi_thr = scipy.ndimage.sum(
                    first_pixels[first_pixels >= tff[labels - 1]],
                    labels[first_pixels >= tff[labels - 1]],
                    lrange,
                )
                tot_si_thr = scipy.ndimage.sum(
                    second_pixels[second_pixels >= tss[labels - 1]],
                    labels[second_pixels >= tss[labels - 1]],
                    lrange,
                )

            if self.do_manders:
                # Manders Coefficient
                M1 = numpy.zeros(len(lrange))
                M2 = numpy.zeros(len(lrange))

                if numpy.any(combined_thresh):
                    M1 = numpy.array(
                        scipy.ndimage.sum(fi_thresh, labels[combined_thresh], lrange)
                    ) / numpy.array(tot_fi_thr)
                    M2 = numpy.array(
                        scipy.ndimage.sum(si_thresh, labels[combined_thresh], lrange)
                    ) / numpy.array(tot_si_thr)
                result += [
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Mean Manders coeff",
                        "%.3f" % numpy.mean(M1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Median Manders coeff",
                        "%.3f" % numpy.median(M1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Min Manders coeff",
                        "%.3f" % numpy.min(M1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Max Manders coeff",
                        "%.3f" % numpy.max(M1),
                    ],
                ]
                result += [
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Mean Manders coeff",
                        "%.3f" % numpy.mean(M2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Median Manders coeff",
                        "%.3f" % numpy.median(M2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Min Manders coeff",
                        "%.3f" % numpy.min(M2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Max Manders coeff",
                        "%.3f" % numpy.max(M2),
                    ],
                ]

            if self.do_rwc:
                # RWC Coefficient
                RWC1 = numpy.zeros(len(lrange))
                RWC2 = numpy.zeros(len(lrange))
                [Rank1] = numpy.lexsort(([labels], [first_pixels]))
                [Rank2] = numpy.lexsort(([labels], [second_pixels]))
                Rank1_U = numpy.hstack(
                    [[False], first_pixels[Rank1[:-1]] != first_pixels[Rank1[1:]]]
                )
                Rank2_U = numpy.hstack(
                    [[False], second_pixels[Rank2[:-1]] != second_pixels[Rank2[1:]]]
                )
                Rank1_S = numpy.cumsum(Rank1_U)
                Rank2_S = numpy.cumsum(Rank2_U)
                Rank_im1 = numpy.zeros(first_pixels.shape, dtype=int)
                Rank_im2 = numpy.zeros(second_pixels.shape, dtype=int)
                Rank_im1[Rank1] = Rank1_S
                Rank_im2[Rank2] = Rank2_S

                R = max(Rank_im1.max(), Rank_im2.max()) + 1
                Di = abs(Rank_im1 - Rank_im2)
                weight = (R - Di) * 1.0 / R
                weight_thresh = weight[combined_thresh]

                if numpy.any(combined_thresh):
                    RWC1 = numpy.array(
                        scipy.ndimage.sum(
                            fi_thresh * weight_thresh, labels[combined_thresh], lrange
                        )
                    ) / numpy.array(tot_fi_thr)
                    RWC2 = numpy.array(
                        scipy.ndimage.sum(
                            si_thresh * weight_thresh, labels[combined_thresh], lrange
                        )
                    ) / numpy.array(tot_si_thr)

                result += [
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Mean RWC coeff",
                        "%.3f" % numpy.mean(RWC1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Median RWC coeff",
                        "%.3f" % numpy.median(RWC1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Min RWC coeff",
                        "%.3f" % numpy.min(RWC1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Max RWC coeff",
                        "%.3f" % numpy.max(RWC1),
                    ],
                ]
                result += [
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Mean RWC coeff",
                        "%.3f" % numpy.mean(RWC2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Median RWC coeff",
                        "%.3f" % numpy.median(RWC2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Min RWC coeff",
                        "%.3f" % numpy.min(RWC2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Max RWC coeff",
                        "%.3f" % numpy.max(RWC2),
                    ],
                ]

            if self.do_overlap:
                # Overlap Coefficient
                if numpy.any(combined_thresh):
                    fpsq = scipy.ndimage.sum(
                        first_pixels[combined_thresh] ** 2,
                        labels[combined_thresh],
                        lrange,
                    )
                    spsq = scipy.ndimage.sum(
                        second_pixels[combined_thresh] ** 2,
                        labels[combined_thresh],
                        lrange,
                    )
                    pdt = numpy.sqrt(numpy.array(fpsq) * numpy.array(spsq))

                    overlap = fix(
                        scipy.ndimage.sum(
                            first_pixels[combined_thresh]
                            * second_pixels[combined_thresh],
                            labels[combined_thresh],
                            lrange,
                        )
                        / pdt
                    )
                    K1 = fix(
                        (
                            scipy.ndimage.sum(
                                first_pixels[combined_thresh]
                                * second_pixels[combined_thresh],
                                labels[combined_thresh],
                                lrange,
                            )
                        )
                        / (numpy.array(fpsq))
                    )
                    K2 = fix(
                        scipy.ndimage.sum(
                            first_pixels[combined_thresh]
                            * second_pixels[combined_thresh],
                            labels[combined_thresh],
                            lrange,
                        )
                        / numpy.array(spsq)
                    )
                else:
                    overlap = K1 = K2 = numpy.zeros(len(lrange))
                result += [
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Mean Overlap coeff",
                        "%.3f" % numpy.mean(overlap),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Median Overlap coeff",
                        "%.3f" % numpy.median(overlap),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Min Overlap coeff",
                        "%.3f" % numpy.min(overlap),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Max Overlap coeff",
                        "%.3f" % numpy.max(overlap),
                    ],
                ]

            if self.do_costes:
                # Orthogonal Regression for Costes' automated threshold
                scale = get_scale(first_image.scale, second_image.scale)

                if self.fast_costes == M_FASTER:
                    thr_fi_c, thr_si_c = self.bisection_costes(fi, si, scale)
                else:
                    thr_fi_c, thr_si_c = self.linear_costes(fi, si, scale)

                # Costes' thershold for entire image is applied to each object
                fi_above_thr = first_pixels > thr_fi_c
                si_above_thr = second_pixels > thr_si_c
                combined_thresh_c = fi_above_thr & si_above_thr
                fi_thresh_c = first_pixels[combined_thresh_c]
                si_thresh_c = second_pixels[combined_thresh_c]
                if numpy.any(fi_above_thr):
                    tot_fi_thr_c = scipy.ndimage.sum(
                        first_pixels[first_pixels >= thr_fi_c],
                        labels[first_pixels >= thr_fi_c],
                        lrange,
                    )
                else:
                    tot_fi_thr_c = numpy.zeros(len(lrange))
                if numpy.any(si_above_thr):
                    tot_si_thr_c = scipy.ndimage.sum(
                        second_pixels[second_pixels >= thr_si_c],
                        labels[second_pixels >= thr_si_c],
                        lrange,
                    )
                else:
                    tot_si_thr_c = numpy.zeros(len(lrange))

                # Costes Automated Threshold
                C1 = numpy.zeros(len(lrange))
                C2 = numpy.zeros(len(lrange))
                if numpy.any(combined_thresh_c):
                    C1 = numpy.array(
                        scipy.ndimage.sum(
                            fi_thresh_c, labels[combined_thresh_c], lrange
                        )
                    ) / numpy.array(tot_fi_thr_c)
                    C2 = numpy.array(
                        scipy.ndimage.sum(
                            si_thresh_c, labels[combined_thresh_c], lrange
                        )
                    ) / numpy.array(tot_si_thr_c)
                result += [
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Mean Manders coeff (Costes)",
                        "%.3f" % numpy.mean(C1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Median Manders coeff (Costes)",
                        "%.3f" % numpy.median(C1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Min Manders coeff (Costes)",
                        "%.3f" % numpy.min(C1),
                    ],
                    [
                        first_image_name,
                        second_image_name,
                        object_name,
                        "Max Manders coeff (Costes)",
                        "%.3f" % numpy.max(C1),
                    ],
                ]
                result += [
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Mean Manders coeff (Costes)",
                        "%.3f" % numpy.mean(C2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Median Manders coeff (Costes)",
                        "%.3f" % numpy.median(C2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Min Manders coeff (Costes)",
                        "%.3f" % numpy.min(C2),
                    ],
                    [
                        second_image_name,
                        first_image_name,
                        object_name,
                        "Max Manders coeff (Costes)",
                        "%.3f" % numpy.max(C2),
                    ],
                ]

        if self.do_corr_and_slope:
            measurement = "Correlation_Correlation_%s_%s" % (
                first_image_name,
                second_image_name,
            )
            workspace.measurements.add_measurement(object_name, measurement, corr)
        if self.do_manders:
            manders_measurement_1 = F_MANDERS_FORMAT % (
                first_image_name,
                second_image_name,
            )
            manders_measurement_2 = F_MANDERS_FORMAT % (
                second_image_name,
                first_image_name,
            )
            workspace.measurements.add_measurement(
                object_name, manders_measurement_1, M1
            )
            workspace.measurements.add_measurement(
                object_name, manders_measurement_2, M2
            )
        if self.do_rwc:
            rwc_measurement_1 = F_RWC_FORMAT % (first_image_name, second_image_name)
            rwc_measurement_2 = F_RWC_FORMAT % (second_image_name, first_image_name)
            workspace.measurements.add_measurement(object_name, rwc_measurement_1, RWC1)
            workspace.measurements.add_measurement(object_name, rwc_measurement_2, RWC2)
        if self.do_overlap:
            overlap_measurement = F_OVERLAP_FORMAT % (
                first_image_name,
                second_image_name,
            )
            k_measurement_1 = F_K_FORMAT % (first_image_name, second_image_name)
            k_measurement_2 = F_K_FORMAT % (second_image_name, first_image_name)
            workspace.measurements.add_measurement(
                object_name, overlap_measurement, overlap
            )
            workspace.measurements.add_measurement(object_name, k_measurement_1, K1)
            workspace.measurements.add_measurement(object_name, k_measurement_2, K2)
        if self.do_costes:
            costes_measurement_1 = F_COSTES_FORMAT % (
                first_image_name,
                second_image_name,
            )
            costes_measurement_2 = F_COSTES_FORMAT % (
                second_image_name,
                first_image_name,
            )
            workspace.measurements.add_measurement(
                object_name, costes_measurement_1, C1
            )
            workspace.measurements.add_measurement(
                object_name, costes_measurement_2, C2
            )

        if n_objects == 0:
            return [
                [
                    first_image_name,
                    second_image_name,
                    object_name,
                    "Mean correlation",
                    "-",
                ],
                [
                    first_image_name,
                    second_image_name,
                    object_name,
                    "Median correlation",
                    "-",
                ],
                [
                    first_image_name,
                    second_image_name,
                    object_name,
                    "Min correlation",
                    "-",
                ],
                [
                    first_image_name,
                    second_image_name,
                    object_name,
                    "Max correlation",
                    "-",
                ],
            ]
        else:
            return result

    def linear_costes(self, fi, si, scale_max=255):
        """
        Finds the Costes Automatic Threshold for colocalization using a linear algorithm.
        Candiate thresholds are gradually decreased until Pearson R falls below 0.
        If "Fast" mode is enabled the "steps" between tested thresholds will be increased
        when Pearson R is much greater than 0.
        """
        i_step = 1 / scale_max
        non_zero = (fi > 0) | (si > 0)
        xvar = numpy.var(fi[non_zero], axis=0, ddof=1)
        yvar = numpy.var(si[non_zero], axis=0, ddof=1)

        xmean = numpy.mean(fi[non_zero], axis=0)
        ymean = numpy.mean(si[non_zero], axis=0)

        z = fi[non_zero] + si[non_zero]
        zvar = numpy.var(z, axis=0, ddof=1)

        covar = 0.5 * (zvar - (xvar + yvar))

        denom = 2 * covar
        num = (yvar - xvar) + numpy.sqrt(
            (yvar - xvar) * (yvar - xvar) + 4 * (covar * covar)
        )
        a = num / denom
        b = ymean - a * xmean

        # Start at 1 step above the maximum value
        img_max = max(fi.max(), si.max())
        i = i_step * ((img_max // i_step) + 1)

        num_true = None
        fi_max = fi.max()
        si_max = si.max()

        # Initialise without a threshold
        costReg, _ = scipy.stats.pearsonr(fi, si)
        thr_fi_c = i
        thr_si_c = (a * i) + b
        while i > fi_max and (a * i) + b > si_max:
            i -= i_step
        while i > i_step:
            thr_fi_c = i
            thr_si_c = (a * i) + b
            combt = (fi < thr_fi_c) | (si < thr_si_c)
            try:
                # Only run pearsonr if the input has changed.
                if (positives := numpy.count_nonzero(combt)) != num_true:
                    costReg, _ = scipy.stats.pearsonr(fi[combt], si[combt])
                    num_true = positives

                if costReg <= 0:
                    break
                elif self.fast_costes.value == M_ACCURATE or i < i_step * 10:
                    i -= i_step
                elif costReg > 0.45:
                    # We're way off, step down 10x
                    i -= i_step * 10
                elif costReg > 0.35:
                    # Still far from 0, step 5x
                    i -= i_step * 5
                elif costReg > 0.25:
                    # Step 2x
                    i -= i_step * 2
                else:
                    i -= i_step
            except ValueError:
                break
        return thr_fi_c, thr_si_c

    def bisection_costes(self, fi, si, scale_max=255):
        """
        Finds the Costes Automatic Threshold for colocalization using a bisection algorithm.
        Candidate thresholds are selected from within a window of possible intensities,
        this window is narrowed based on the R value of each tested candidate.
        We're looking for the first point below 0, and R value can become highly variable
        at lower thresholds in some samples. Therefore the candidate tested in each
        loop is 1/6th of the window size below the maximum value (as opposed to the midpoint).
        """

        non_zero = (fi > 0) | (si > 0)
        xvar = numpy.var(fi[non_zero], axis=0, ddof=1)
        yvar = numpy.var(si[non_zero], axis=0, ddof=1)

        xmean = numpy.mean(fi[non_zero], axis=0)
        ymean = numpy.mean(si[non_zero], axis=0)

        z = fi[non_zero] + si[non_zero]
        zvar = numpy.var(z, axis=0, ddof=1)

        covar = 0.5 * (zvar - (xvar + yvar))

        denom = 2 * covar
        num = (yvar - xvar) + numpy.sqrt(
            (yvar - xvar) * (yvar - xvar) + 4 * (covar * covar)
        )
        a = num / denom
        b = ymean - a * xmean

        # Initialise variables
        left = 1
        right = scale_max
        mid = ((right - left) // (6/5)) + left
        lastmid = 0
        # Marks the value with the last positive R value.
        valid = 1

        while lastmid != mid:
            thr_fi_c = mid / scale_max
            thr_si_c = (a * thr_fi_c) + b
            combt = (fi < thr_fi_c) | (si < thr_si_c)
            if numpy.count_nonzero(combt) <= 2:
                # Can't run pearson with only 2 values.
                left = mid - 1
            else:
                try:
                    costReg, _ = scipy.stats.pearsonr(fi[combt], si[combt])
                    if costReg < 0:
                        left = mid - 1
                    elif costReg >= 0:
                        right = mid + 1
                        valid = mid
                except ValueError:
                    # Catch misc Pearson errors with low sample numbers
                    left = mid - 1
            lastmid = mid
            if right - left > 6:
                mid = ((right - left) // (6 / 5)) + left
            else:
                mid = ((right - left) // 2) + left

        thr_fi_c = (valid - 1) / scale_max
        thr_si_c = (a * thr_fi_c) + b

        return thr_fi_c, thr_si_c


def get_scale(scale_1, scale_2):
    if scale_1 is not None and scale_2 is not None:
        return max(scale_1, scale_2)
    elif scale_1 is not None:
        return scale_1
    elif scale_2 is not None:
        return scale_2
    else:
        return 255


def measure_objects(image1, image2, labels, name1, name2, scale):
    """CellProfiler 4.2.8's per-object measurements of (image1 first, image2 second) on ``labels``
    (consecutive ids 1..n), both images with CellProfiler scale ``scale``: {feature name: values}."""
    images = {name1: _Image(image1, scale), name2: _Image(image2, scale)}
    ws = _Workspace(images, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MeasureColocalization().run_image_pair_objects(ws, name1, name2, "Objects")
    return ws.store


# ---------------------------------------------------------------------------------------------------
# CellProfiler 4.2.8's Threshold (global), MorphologicalSkeleton and MeasureObjectSkeleton, verbatim:
# cellprofiler/modules/threshold.py ``Threshold.run`` (less the measurement/display calls the glue
# replaces), ``apply_threshold``, ``get_threshold``, ``get_global_threshold``,
# ``_correct_global_threshold``; cellprofiler/modules/morphologicalskeleton.py
# ``MorphologicalSkeleton.run``; cellprofiler/modules/measureobjectskeleton.py
# ``MeasureObjectSkeleton.run`` up to its measurements (the graph export and display parts, off in the
# JUMP pipeline, are left out). The glue: settings as plain attributes (the JUMP pipeline's values),
# an image set, a measurement store.
# ---------------------------------------------------------------------------------------------------

import centrosome.cpmorphology
import centrosome.propagate as propagate
import centrosome.smooth
import centrosome.threshold
import skimage.filters
import skimage.morphology
from scipy.ndimage import grey_dilation, grey_erosion

TM_LI = "Minimum Cross-Entropy"
TM_OTSU = "Otsu"
TM_MANUAL = "Manual"
TM_MEASUREMENT = "Measurement"
TM_ROBUST_BACKGROUND = "Robust Background"
TM_SAUVOLA = "Sauvola"
TS_GLOBAL = "Global"
TS_ADAPTIVE = "Adaptive"
O_TWO_CLASS = "Two classes"
O_THREE_CLASS = "Three classes"
C_OBJSKELETON = "ObjectSkeleton"
F_NUMBER_TRUNKS = "NumberTrunks"
F_NUMBER_NON_TRUNK_BRANCHES = "NumberNonTrunkBranches"
F_NUMBER_BRANCH_ENDS = "NumberBranchEnds"
F_TOTAL_OBJSKELETON_LENGTH = "TotalObjectSkeletonLength"


class _Setting:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return self.value == other

    def __bool__(self):
        return bool(self.value)

    def __hash__(self):
        return hash(self.value)


class _Range:
    min = 0.0
    max = 1.0


class Image:
    def __init__(self, image=None, parent_image=None, dimensions=2, mask=None):
        self.pixel_data = image
        self.dimensions = dimensions
        self.volumetric = dimensions == 3
        self.mask = _np.ones(image.shape, bool) if mask is None else mask
        self.has_mask = mask is not None

    def crop_image_similarly(self, image):
        return image


class Measurements(dict):
    def add_measurement(self, obj, name, values):
        self[obj, name] = values


def size_similarly(labels, secondary):
    raise AssertionError("images of one size only")


class _ImageSet(dict):
    def get_image(self, name, must_be_grayscale=False, must_be_binary=False):
        return self[name]

    def add(self, name, image):
        self[name] = image


class _SkelWorkspace:
    def __init__(self, images, labels):
        self.image_set = _ImageSet(images)
        self.object_set = types.SimpleNamespace(get_objects=lambda name: _Objects(labels))
        self.measurements = Measurements()


class Threshold:
    x_name = _Setting("mito_tubeness")
    y_name = _Setting("mito_bw")
    threshold_scope = _Setting(TS_GLOBAL)
    threshold_operation = TM_LI
    threshold_smoothing_scale = _Setting(1.3488)
    threshold_correction_factor = _Setting(1.0)
    threshold_range = _Range()
    log_transform = False
    two_class_otsu = _Setting(O_TWO_CLASS)

    def run(self, workspace):
        input_image = workspace.image_set.get_image(
            self.x_name.value, must_be_grayscale=True
        )
        dimensions = input_image.dimensions
        final_threshold, orig_threshold, guide_threshold = self.get_threshold(
            input_image, workspace, automatic=False,
        )
        self.final_threshold = final_threshold  # glue: instead of add_threshold_measurements

        binary_image, _ = self.apply_threshold(input_image, final_threshold)

        output = Image(binary_image, parent_image=input_image, dimensions=dimensions)

        workspace.image_set.add(self.y_name.value, output)

    def apply_threshold(self, image, threshold, automatic=False):
        data = image.pixel_data

        mask = image.mask

        if not automatic and self.threshold_smoothing_scale.value == 0:
            return (data >= threshold) & mask, 0

        if automatic:
            sigma = 1
        else:
            # Convert from a scale into a sigma. What I've done here
            # is to structure the Gaussian so that 1/2 of the smoothed
            # intensity is contributed from within the smoothing diameter
            # and 1/2 is contributed from outside.
            sigma = self.threshold_smoothing_scale.value / 0.6744 / 2.0

        blurred_image = centrosome.smooth.smooth_with_function_and_mask(
            data,
            lambda x: scipy.ndimage.gaussian_filter(x, sigma, mode="constant", cval=0),
            mask,
        )

        return (blurred_image >= threshold) & mask, sigma

    def get_threshold(self, image, workspace, automatic=False):
        need_transform = (
                not automatic and
                self.threshold_operation in (TM_LI, TM_OTSU) and
                self.log_transform
        )

        if need_transform:
            image_data, conversion_dict = centrosome.threshold.log_transform(image.pixel_data)
        else:
            image_data = image.pixel_data

        if self.threshold_operation == TM_MANUAL:
            return self.manual_threshold.value, self.manual_threshold.value, None

        elif self.threshold_operation == TM_MEASUREMENT:
            # Thresholds are stored as single element arrays.  Cast to float to extract the value.
            orig_threshold = float(
                workspace.measurements.get_current_image_measurement(
                    self.thresholding_measurement.value
                )
            )
            return self._correct_global_threshold(orig_threshold), orig_threshold, None

        elif self.threshold_scope.value == TS_GLOBAL or automatic:
            th_guide = None
            th_original = self.get_global_threshold(image_data, image.mask, automatic=automatic)

        elif self.threshold_scope.value == TS_ADAPTIVE:
            th_guide = self.get_global_threshold(image_data, image.mask)
            th_original = self.get_local_threshold(image_data, image.mask, image.volumetric)
        else:
            raise ValueError("Invalid thresholding settings")

        if need_transform:
            th_original = centrosome.threshold.inverse_log_transform(th_original, conversion_dict)
            if th_guide is not None:
                th_guide = centrosome.threshold.inverse_log_transform(th_guide, conversion_dict)

        if self.threshold_scope.value == TS_GLOBAL or automatic:
            th_corrected = self._correct_global_threshold(th_original)
        else:
            th_guide = self._correct_global_threshold(th_guide)
            th_corrected = self._correct_local_threshold(th_original, th_guide)

        return th_corrected, th_original, th_guide

    def get_global_threshold(self, image, mask, automatic=False):
        image_data = image[mask]

        # Shortcuts - Check if image array is empty or all pixels are the same value.
        if len(image_data) == 0:
            threshold = 0.0

        elif numpy.all(image_data == image_data[0]):
            threshold = image_data[0]

        elif automatic or self.threshold_operation in (TM_LI, TM_SAUVOLA):
            tol = max(numpy.min(numpy.diff(numpy.unique(image_data))) / 2, 0.5 / 65536)
            threshold = skimage.filters.threshold_li(image_data, tolerance=tol)

        elif self.threshold_operation == TM_ROBUST_BACKGROUND:
            threshold = self.get_threshold_robust_background(image_data)

        elif self.threshold_operation == TM_OTSU:
            if self.two_class_otsu.value == O_TWO_CLASS:
                threshold = skimage.filters.threshold_otsu(image_data)
            elif self.two_class_otsu.value == O_THREE_CLASS:
                bin_wanted = (
                    0 if self.assign_middle_to_foreground.value == "Foreground" else 1
                )
                threshold = skimage.filters.threshold_multiotsu(image_data, nbins=128)
                threshold = threshold[bin_wanted]
        else:
            raise ValueError("Invalid thresholding settings")
        return threshold

    def _correct_global_threshold(self, threshold):
        threshold *= self.threshold_correction_factor.value
        return min(max(threshold, self.threshold_range.min), self.threshold_range.max)


class MorphologicalSkeleton:
    x_name = _Setting("mito_bw")
    y_name = _Setting("mito_skel")
    show_window = False

    def run(self, workspace):
        x_name = self.x_name.value

        y_name = self.y_name.value

        images = workspace.image_set

        x = images.get_image(x_name)

        dimensions = x.dimensions

        x_data = x.pixel_data

        if x.volumetric:
            y_data = skimage.morphology.skeletonize_3d(x_data)
        else:
            y_data = skimage.morphology.skeletonize(x_data)

        y = Image(dimensions=dimensions, image=y_data, parent_image=x)

        images.add(y_name, y)



class MeasureObjectSkeleton:
    seed_objects_name = _Setting("Nuclei")
    image_name = _Setting("mito_skel")
    wants_to_fill_holes = _Setting(True)
    maximum_hole_size = _Setting(10)
    wants_objskeleton_graph = _Setting(False)
    wants_branchpoint_image = _Setting(False)
    show_window = False

    def run(self, workspace):
        """Run the module on the image set"""
        seed_objects_name = self.seed_objects_name.value
        skeleton_name = self.image_name.value
        seed_objects = workspace.object_set.get_objects(seed_objects_name)
        labels = seed_objects.segmented
        labels_count = numpy.max(labels)
        label_range = numpy.arange(labels_count, dtype=numpy.int32) + 1

        skeleton_image = workspace.image_set.get_image(
            skeleton_name, must_be_binary=True
        )
        skeleton = skeleton_image.pixel_data
        if skeleton_image.has_mask:
            skeleton = skeleton & skeleton_image.mask
        try:
            labels = skeleton_image.crop_image_similarly(labels)
        except:
            labels, m1 = size_similarly(skeleton, labels)
            labels[~m1] = 0
        #
        # The following code makes a ring around the seed objects with
        # the skeleton trunks sticking out of it.
        #
        # Create a new skeleton with holes at the seed objects
        # First combine the seed objects with the skeleton so
        # that the skeleton trunks come out of the seed objects.
        #
        # Erode the labels once so that all of the trunk branchpoints
        # will be within the labels
        #
        #
        # Dilate the objects, then subtract them to make a ring
        #
        my_disk = centrosome.cpmorphology.strel_disk(1.5).astype(int)
        dilated_labels = grey_dilation(labels, footprint=my_disk)
        seed_mask = dilated_labels > 0
        combined_skel = skeleton | seed_mask

        closed_labels = grey_erosion(dilated_labels, footprint=my_disk)
        seed_center = closed_labels > 0
        combined_skel = combined_skel & (~seed_center)
        #
        # Fill in single holes (but not a one-pixel hole made by
        # a one-pixel image)
        #
        if self.wants_to_fill_holes:

            def size_fn(area, is_object):
                return (~is_object) and (area <= self.maximum_hole_size.value)

            combined_skel = centrosome.cpmorphology.fill_labeled_holes(
                combined_skel, ~seed_center, size_fn
            )
        #
        # Reskeletonize to make true branchpoints at the ring boundaries
        #
        combined_skel = centrosome.cpmorphology.skeletonize(combined_skel)
        #
        # The skeleton outside of the labels
        #
        outside_skel = combined_skel & (dilated_labels == 0)
        #
        # Associate all skeleton points with seed objects
        #
        dlabels, distance_map = propagate.propagate(
            numpy.zeros(labels.shape), dilated_labels, combined_skel, 1
        )
        #
        # Get rid of any branchpoints not connected to seeds
        #
        combined_skel[dlabels == 0] = False
        #
        # Find the branchpoints
        #
        branch_points = centrosome.cpmorphology.branchpoints(combined_skel)
        #
        # Odd case: when four branches meet like this, branchpoints are not
        # assigned because they are arbitrary. So assign them.
        #
        # .  .
        #  B.
        #  .B
        # .  .
        #
        odd_case = (
            combined_skel[:-1, :-1]
            & combined_skel[1:, :-1]
            & combined_skel[:-1, 1:]
            & combined_skel[1, 1]
        )
        branch_points[:-1, :-1][odd_case] = True
        branch_points[1:, 1:][odd_case] = True
        #
        # Find the branching counts for the trunks (# of extra branches
        # emanating from a point other than the line it might be on).
        #
        branching_counts = centrosome.cpmorphology.branchings(combined_skel)
        branching_counts = numpy.array([0, 0, 0, 1, 2])[branching_counts]
        #
        # Only take branches within 1 of the outside skeleton
        #
        dilated_skel = scipy.ndimage.binary_dilation(
            outside_skel, centrosome.cpmorphology.eight_connect
        )
        branching_counts[~dilated_skel] = 0
        #
        # Find the endpoints
        #
        end_points = centrosome.cpmorphology.endpoints(combined_skel)
        #
        # We use two ranges for classification here:
        # * anything within one pixel of the dilated image is a trunk
        # * anything outside of that range is a branch
        #
        nearby_labels = dlabels.copy()
        nearby_labels[distance_map > 1.5] = 0

        outside_labels = dlabels.copy()
        outside_labels[nearby_labels > 0] = 0
        #
        # The trunks are the branchpoints that lie within one pixel of
        # the dilated image.
        #
        if labels_count > 0:
            trunk_counts = fix(
                scipy.ndimage.sum(branching_counts, nearby_labels, label_range)
            ).astype(int)
        else:
            trunk_counts = numpy.zeros((0,), int)
        #
        # The branches are the branchpoints that lie outside the seed objects
        #
        if labels_count > 0:
            branch_counts = fix(
                scipy.ndimage.sum(branch_points, outside_labels, label_range)
            )
        else:
            branch_counts = numpy.zeros((0,), int)
        #
        # Save the endpoints
        #
        if labels_count > 0:
            end_counts = fix(scipy.ndimage.sum(end_points, outside_labels, label_range))
        else:
            end_counts = numpy.zeros((0,), int)
        #
        # Calculate the distances
        #
        total_distance = centrosome.cpmorphology.skeleton_length(
            dlabels * outside_skel, label_range
        )
        #
        # Save measurements
        #
        m = workspace.measurements
        assert isinstance(m, Measurements)
        feature = "_".join((C_OBJSKELETON, F_NUMBER_TRUNKS, skeleton_name))
        m.add_measurement(seed_objects_name, feature, trunk_counts)
        feature = "_".join((C_OBJSKELETON, F_NUMBER_NON_TRUNK_BRANCHES, skeleton_name))
        m.add_measurement(seed_objects_name, feature, branch_counts)
        feature = "_".join((C_OBJSKELETON, F_NUMBER_BRANCH_ENDS, skeleton_name))
        m.add_measurement(seed_objects_name, feature, end_counts)
        feature = "_".join((C_OBJSKELETON, F_TOTAL_OBJSKELETON_LENGTH, skeleton_name))
        m[seed_objects_name, feature] = total_distance
        #


def jump_mito_skeleton(tubeness_image, nuclei):
    """CellProfiler 4.2.8's JUMP chain on ``mito_tubeness``: Threshold -> MorphologicalSkeleton ->
    MeasureObjectSkeleton (seed Nuclei ``nuclei``, consecutive ids 1..n). Returns (threshold, mito_bw,
    mito_skel, {feature name: values})."""
    ws = _SkelWorkspace({"mito_tubeness": Image(tubeness_image)}, nuclei)
    thr = Threshold()
    thr.run(ws)
    MorphologicalSkeleton().run(ws)
    MeasureObjectSkeleton().run(ws)
    feats = {name: _np.asarray(v, float) for (_, name), v in ws.measurements.items()}
    return thr.final_threshold, ws.image_set["mito_bw"].pixel_data, ws.image_set["mito_skel"].pixel_data, feats


def measure_object_skeleton(skeleton, nuclei):
    """CellProfiler 4.2.8's MeasureObjectSkeleton alone (JUMP settings) of a binary ``skeleton`` around
    seed ``nuclei`` (consecutive ids 1..n): {feature name: values}."""
    ws = _SkelWorkspace({"mito_skel": Image(skeleton)}, nuclei)
    MeasureObjectSkeleton().run(ws)
    return {name: _np.asarray(v, float) for (_, name), v in ws.measurements.items()}
