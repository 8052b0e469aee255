"""CellProfiler 4.2.8's MeasureColocalization object-mode code, and the image measurements of the JUMP
pipeline (second part, below), verbatim, as a test reference.

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
# CellProfiler 4.2.8's image measurements of the JUMP pipeline (JUMP_analysis_v3.cppipe), verbatim:
# MeasureImageQuality, MeasureImageIntensity, MeasureTexture (whole image), MeasureGranularity,
# Threshold, MaskImage and CorrectIlluminationCalculate ("Background"), from the same tag v4.2.8,
# cellprofiler/modules/{measureimagequality,measureimageintensity,measuretexture,measuregranularity,
# threshold,maskimage,correctilluminationcalculate}.py. The methods below are copied unchanged; the glue
# after them is ours: module constants, settings as plain attributes, a minimal workspace/image set,
# an ``Image`` with ``pixel_data``/``mask``, a ``skimage.morphology`` whose ``selem=`` keyword (removed
# by scikit-image 0.20) is passed on as ``footprint=``, a ``centrosome`` whose ``rps`` gets an array that
# still has NumPy 1's ``.ptp()`` method, and constants that MeasureImageQuality and
# MeasureImageIntensity name alike (``F_TOTAL_INTENSITY`` ...): one ``_Both`` string holds the
# MeasureImageQuality word and formats ``% name`` as MeasureImageIntensity's pattern.
# CorrectIlluminationApply ("Subtract", clip to [0, 1]) is two lines of glue in ``cp_corr_blue``.
# ---------------------------------------------------------------------------------------------------

import centrosome.cpmorphology
import centrosome.haralick
import centrosome.radial_power_spectrum
import centrosome.smooth
import centrosome.threshold
import mahotas
import mahotas.features
import scipy.linalg
import skimage as _skimage
import skimage.exposure
import skimage.filters
import skimage.morphology
import skimage.util


class _PtpArray(_np.ndarray):
    """An array with NumPy 1's ``.ptp()`` method, which centrosome 1.3's ``rps`` still calls."""
    def ptp(self, *args, **kwargs):
        return _np.ptp(_np.asarray(self), *args, **kwargs)


def _rps(img):
    return [_np.asarray(a) for a in _centrosome.radial_power_spectrum.rps(_np.asarray(img).view(_PtpArray))]


_centrosome = centrosome
centrosome = types.SimpleNamespace(
    cpmorphology=_centrosome.cpmorphology, haralick=_centrosome.haralick, smooth=_centrosome.smooth,
    threshold=_centrosome.threshold, radial_power_spectrum=types.SimpleNamespace(rps=_rps))


def _selem(fn):
    def call(*args, selem=None, **kwargs):
        if selem is not None:
            kwargs["footprint"] = selem
        return fn(*args, **kwargs)
    return call


skimage = types.SimpleNamespace(
    util=_skimage.util, exposure=_skimage.exposure, filters=_skimage.filters,
    morphology=types.SimpleNamespace(disk=_skimage.morphology.disk, ball=_skimage.morphology.ball,
                                     erosion=_selem(_skimage.morphology.erosion),
                                     dilation=_selem(_skimage.morphology.dilation),
                                     reconstruction=_selem(_skimage.morphology.reconstruction)))


class _Both(str):
    """A MeasureImageQuality feature word whose ``% name`` is MeasureImageIntensity's pattern."""
    def __mod__(self, name):
        return "Intensity_%s_%s" % (str(self), name)


# measureimagequality.py
C_IMAGE_QUALITY = "ImageQuality"
F_FOCUS_SCORE = "FocusScore"
F_LOCAL_FOCUS_SCORE = "LocalFocusScore"
F_CORRELATION = "Correlation"
F_POWER_SPECTRUM_SLOPE = "PowerLogLogSlope"
F_TOTAL_AREA = _Both("TotalArea")
F_TOTAL_VOLUME = "TotalVolume"
F_TOTAL_INTENSITY = _Both("TotalIntensity")
F_MEAN_INTENSITY = _Both("MeanIntensity")
F_MEDIAN_INTENSITY = _Both("MedianIntensity")
F_STD_INTENSITY = _Both("StdIntensity")
F_MAD_INTENSITY = _Both("MADIntensity")
F_MAX_INTENSITY = _Both("MaxIntensity")
F_MIN_INTENSITY = _Both("MinIntensity")
F_PERCENT_MAXIMAL = _Both("PercentMaximal")
F_PERCENT_MINIMAL = "PercentMinimal"
O_TWO_CLASS = "Two classes"
O_THREE_CLASS = "Three classes"
O_WEIGHTED_VARIANCE = "Weighted variance"
O_FOREGROUND = "Foreground"
O_BACKGROUND = "Background"
# measureimageintensity.py
F_UPPER_QUARTILE = "Intensity_UpperQuartileIntensity_%s"
F_LOWER_QUARTILE = "Intensity_LowerQuartileIntensity_%s"
# measuretexture.py
TEXTURE = "Texture"
F_HARALICK = """AngularSecondMoment Contrast Correlation Variance
InverseDifferenceMoment SumAverage SumVariance SumEntropy Entropy
DifferenceVariance DifferenceEntropy InfoMeas1 InfoMeas2""".split()
# cellprofiler_core.constants.measurement
C_GRANULARITY = "Granularity_%s_%s"
FF_FINAL_THRESHOLD = "Threshold_FinalThreshold_%s"
FF_ORIG_THRESHOLD = "Threshold_OrigThreshold_%s"
FF_GUIDE_THRESHOLD = "Threshold_GuideThreshold_%s"
FF_WEIGHTED_VARIANCE = "Threshold_WeightedVariance_%s"
FF_SUM_OF_ENTROPIES = "Threshold_SumOfEntropies_%s"
# threshold.py
TS_GLOBAL = "Global"
TS_ADAPTIVE = "Adaptive"
TM_MANUAL = "Manual"
TM_MEASUREMENT = "Measurement"
TM_LI = "Minimum Cross-Entropy"
TM_OTSU = "Otsu"
TM_ROBUST_BACKGROUND = "Robust Background"
TM_SAUVOLA = "Sauvola"
# maskimage.py
IO_OBJECTS = "Objects"
# correctilluminationcalculate.py
IC_REGULAR = "Regular"
IC_BACKGROUND = "Background"
SM_FIT_POLYNOMIAL = "Fit Polynomial"
SM_MEDIAN_FILTER = "Median Filter"
SM_GAUSSIAN_FILTER = "Gaussian Filter"
SM_SPLINES = "Splines"
FI_AUTOMATIC = "Automatic"
FI_OBJECT_SIZE = "Object size"
FI_MANUALLY = "Manually"

class _MeasureImageQualityCode:
    """MeasureImageQuality 4.2.8: the measuring methods, verbatim."""

    def retrieve_image_scalings(self, image_group, workspace):
        """Grab the scalings from the image """

        result = []
        for image_name in self.images_to_process(image_group, workspace):
            feature = "{}_{}_{}".format(
                C_IMAGE_QUALITY, cellprofiler_core.constants.image.C_SCALING, image_name
            )
            value = workspace.image_set.get_image(image_name).scale
            if not value:  # Set to NaN if not defined, such as for derived images
                value = numpy.NaN
            workspace.add_measurement("Image", feature, value)
            result += [["{} scaling".format(image_name), value]]
        return result

    def calculate_focus_scores(self, image_group, workspace):
        """Calculate a local blur measurement and a image-wide one"""

        result = []
        for image_name in self.images_to_process(image_group, workspace):

            image = workspace.image_set.get_image(image_name, must_be_grayscale=True)
            pixel_data = image.pixel_data
            shape = image.pixel_data.shape
            if image.has_mask:
                pixel_data = pixel_data[image.mask]

            local_focus_score = []
            for scale_group in image_group.scale_groups:
                scale = scale_group.scale.value

                focus_score = 0
                if len(pixel_data):
                    mean_image_value = numpy.mean(pixel_data)
                    squared_normalized_image = (pixel_data - mean_image_value) ** 2
                    if mean_image_value > 0:
                        focus_score = numpy.sum(squared_normalized_image) / (
                            numpy.product(pixel_data.shape) * mean_image_value
                        )
                #
                # Create a labels matrix that grids the image to the dimensions
                # of the window size
                #
                if image.dimensions == 2:
                    i, j = numpy.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
                    m, n = (numpy.array(shape) + scale - 1) // scale
                    i = (i * float(m) / float(shape[0])).astype(int)
                    j = (j * float(n) / float(shape[1])).astype(int)
                    grid = i * n + j + 1
                    grid_range = numpy.arange(0, m * n + 1, dtype=numpy.int32)
                else:
                    k, i, j = numpy.mgrid[
                        0 : shape[0], 0 : shape[1], 0 : shape[2]
                    ].astype(float)
                    o, m, n = (numpy.array(shape) + scale - 1) // scale
                    k = (k * float(o) / float(shape[0])).astype(int)
                    i = (i * float(m) / float(shape[1])).astype(int)
                    j = (j * float(n) / float(shape[2])).astype(int)
                    grid = k * o + i * n + j + 1  # hmm
                    grid_range = numpy.arange(0, m * n * o + 1, dtype=numpy.int32)

                if image.has_mask:
                    grid[numpy.logical_not(image.mask)] = 0
                
                #
                # Do the math per label
                #
                local_means = centrosome.cpmorphology.fixup_scipy_ndimage_result(
                    scipy.ndimage.mean(image.pixel_data, grid, grid_range)
                )
                local_squared_normalized_image = (
                    image.pixel_data - local_means[grid]
                ) ** 2
                #
                # Compute the sum of local_squared_normalized_image values for each
                # grid for means > 0. Exclude grid label = 0 because that's masked
                #
                grid_mask = (local_means != 0) & ~numpy.isnan(local_means)
                nz_grid_range = grid_range[grid_mask]
                if len(nz_grid_range) and nz_grid_range[0] == 0:
                    nz_grid_range = nz_grid_range[1:]
                    local_means = local_means[1:]
                    grid_mask = grid_mask[1:]
                local_focus_score += [
                    0
                ]  # assume the worst - that we can't calculate it
                if len(nz_grid_range):
                    sums = centrosome.cpmorphology.fixup_scipy_ndimage_result(
                        scipy.ndimage.sum(
                            local_squared_normalized_image, grid, nz_grid_range
                        )
                    )
                    pixel_counts = centrosome.cpmorphology.fixup_scipy_ndimage_result(
                        scipy.ndimage.sum(numpy.ones(shape), grid, nz_grid_range)
                    )
                    local_norm_var = sums / (pixel_counts * local_means[grid_mask])
                    local_norm_median = numpy.median(local_norm_var)
                    if numpy.isfinite(local_norm_median) and local_norm_median > 0:
                        local_focus_score[-1] = (
                            numpy.var(local_norm_var) / local_norm_median
                        )

            #
            # Add the measurements
            #
            focus_score_name = "{}_{}_{}".format(
                C_IMAGE_QUALITY, F_FOCUS_SCORE, image_name
            )
            workspace.add_measurement("Image", focus_score_name, focus_score)
            result += [["{} focus score @{:d}".format(image_name, scale), focus_score]]

            for idx, scale_group in enumerate(image_group.scale_groups):
                scale = scale_group.scale.value
                local_focus_score_name = "{}_{}_{}_{:d}".format(
                    C_IMAGE_QUALITY, F_LOCAL_FOCUS_SCORE, image_name, scale
                )
                workspace.add_measurement(
                    "Image", local_focus_score_name, local_focus_score[idx],
                )
                result += [
                    [
                        "{} local focus score @{:d}".format(image_name, scale),
                        local_focus_score[idx],
                    ]
                ]

        return result

    def calculate_correlation(self, image_group, workspace):
        """Calculate a correlation measure from the Harlick feature set"""
        result = []
        for image_name in self.images_to_process(image_group, workspace):
            image = workspace.image_set.get_image(image_name, must_be_grayscale=True)
            pixel_data = image.pixel_data

            # Compute Haralick's correlation texture for the given scales
            image_labels = numpy.ones(pixel_data.shape, int)
            if image.has_mask:
                image_labels[~image.mask] = 0
            for scale_group in image_group.scale_groups:
                scale = scale_group.scale.value

                value = centrosome.haralick.Haralick(
                    pixel_data, image_labels, 0, scale
                ).H3()

                if len(value) != 1 or not numpy.isfinite(value[0]):
                    value = 0.0
                else:
                    value = float(value)
                    
                workspace.add_measurement(
                    "Image",
                    "{}_{}_{}_{:d}".format(
                        C_IMAGE_QUALITY, F_CORRELATION, image_name, scale
                    ),
                    float(value),
                )
                result += [
                    [
                        "{} {} @{:d}".format(image_name, F_CORRELATION, scale),
                        "{:.2f}".format(float(value)),
                    ]
                ]
        return result

    def calculate_saturation(self, image_group, workspace):
        """Count the # of pixels at saturation"""

        result = []
        for image_name in self.images_to_process(image_group, workspace):
            image = workspace.image_set.get_image(image_name, must_be_grayscale=True)
            pixel_data = image.pixel_data
            if image.has_mask:
                pixel_data = pixel_data[image.mask]
            pixel_count = numpy.product(pixel_data.shape)
            if pixel_count == 0:
                percent_maximal = 0
                percent_minimal = 0
            else:
                number_pixels_maximal = numpy.sum(pixel_data == numpy.max(pixel_data))
                number_pixels_minimal = numpy.sum(pixel_data == numpy.min(pixel_data))
                percent_maximal = (
                    100.0 * float(number_pixels_maximal) / float(pixel_count)
                )
                percent_minimal = (
                    100.0 * float(number_pixels_minimal) / float(pixel_count)
                )
            percent_maximal_name = "{}_{}_{}".format(
                C_IMAGE_QUALITY, F_PERCENT_MAXIMAL, image_name
            )
            percent_minimal_name = "{}_{}_{}".format(
                C_IMAGE_QUALITY, F_PERCENT_MINIMAL, image_name
            )
            workspace.add_measurement(
                "Image", percent_maximal_name, percent_maximal,
            )
            workspace.add_measurement(
                "Image", percent_minimal_name, percent_minimal,
            )
            result += [
                ["{} maximal".format(image_name), "{:.1f} %".format(percent_maximal)],
                ["{} minimal".format(image_name), "{:.1f} %".format(percent_minimal)],
            ]
        return result

    def run_intensity_measurement(self, image_name, workspace):
        image = workspace.image_set.get_image(image_name, must_be_grayscale=True)
        pixels = image.pixel_data
        if image.has_mask:
            pixels = pixels[image.mask]

        volumetric = workspace.pipeline.volumetric()
        area_text, area_measurement = (
            ("Volume", F_TOTAL_VOLUME) if volumetric else ("Area", F_TOTAL_AREA)
        )

        pixel_count = numpy.product(pixels.shape)
        if pixel_count == 0:
            pixel_sum = 0
            pixel_mean = 0
            pixel_std = 0
            pixel_mad = 0
            pixel_median = 0
            pixel_min = 0
            pixel_max = 0
        else:
            pixel_sum = numpy.sum(pixels)
            pixel_mean = pixel_sum / float(pixel_count)
            pixel_std = numpy.std(pixels)
            pixel_median = numpy.median(pixels)
            pixel_mad = numpy.median(numpy.abs(pixels - pixel_median))
            pixel_min = numpy.min(pixels)
            pixel_max = numpy.max(pixels)

        m = workspace.measurements
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, area_measurement, image_name)), pixel_count
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_TOTAL_INTENSITY, image_name)), pixel_sum
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_MEAN_INTENSITY, image_name)), pixel_mean
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_MEDIAN_INTENSITY, image_name)), pixel_median
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_STD_INTENSITY, image_name)), pixel_std
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_MAD_INTENSITY, image_name)), pixel_mad
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_MAX_INTENSITY, image_name)), pixel_max
        )
        m.add_image_measurement(
            "_".join((C_IMAGE_QUALITY, F_MIN_INTENSITY, image_name)), pixel_min
        )

        result = [
            ["{} {}".format(image_name, feature_name), "{:.2f}".format(value)]
            for feature_name, value in (
                ("Total intensity", pixel_sum),
                ("Mean intensity", pixel_mean),
                ("Median intensity", pixel_median),
                ("Std intensity", pixel_std),
                ("MAD intensity", pixel_mad),
                ("Min intensity", pixel_min),
                ("Max intensity", pixel_max),
                ("Total {}".format(area_text), pixel_count),
            )
        ]
        return result

    def calculate_power_spectrum(self, image_group, workspace):
        result = []
        for image_name in self.images_to_process(image_group, workspace):
            image = workspace.image_set.get_image(image_name, must_be_grayscale=True)

            if image.dimensions == 3:
                # TODO: calculate "radial power spectrum" for volumes.
                continue

            pixel_data = image.pixel_data

            if image.has_mask:
                pixel_data = numpy.array(pixel_data)  # make a copy
                masked_pixels = pixel_data[image.mask]
                pixel_count = numpy.product(masked_pixels.shape)
                if pixel_count > 0:
                    pixel_data[~image.mask] = numpy.mean(masked_pixels)
                else:
                    pixel_data[~image.mask] = 0

            radii, magnitude, power = centrosome.radial_power_spectrum.rps(pixel_data)
            if sum(magnitude) > 0 and len(numpy.unique(pixel_data)) > 1:
                valid = magnitude > 0
                radii = radii[valid].reshape((-1, 1))
                power = power[valid].reshape((-1, 1))
                if radii.shape[0] > 1:
                    idx = numpy.isfinite(numpy.log(power))
                    powerslope = scipy.linalg.basic.lstsq(
                        numpy.hstack(
                            (
                                numpy.log(radii)[idx][:, numpy.newaxis],
                                numpy.ones(radii.shape)[idx][:, numpy.newaxis],
                            )
                        ),
                        numpy.log(power)[idx][:, numpy.newaxis],
                    )[0][0]
                else:
                    powerslope = 0
            else:
                powerslope = 0

            workspace.add_measurement(
                "Image",
                "{}_{}_{}".format(C_IMAGE_QUALITY, F_POWER_SPECTRUM_SLOPE, image_name),
                powerslope,
            )
            result += [
                [
                    "{} {}".format(image_name, F_POWER_SPECTRUM_SLOPE),
                    "{:.1f}".format(float(powerslope)),
                ]
            ]
        return result

    def calculate_thresholds(self, image_group, workspace):
        """Calculate a threshold for this image"""
        result = []
        all_threshold_groups = self.get_all_threshold_groups(image_group)

        for image_name in self.images_to_process(image_group, workspace):
            image = workspace.image_set.get_image(image_name, must_be_grayscale=True)

            # TODO: works on 2D slice of image, i suspect the thresholding methods in centrosome aren't working in 3D
            pixel_data = image.pixel_data.astype(numpy.float32)

            for threshold_group in all_threshold_groups:
                threshold_method = threshold_group.threshold_algorithm
                object_fraction = threshold_group.object_fraction.value
                two_class_otsu = threshold_group.two_class_otsu.value == O_TWO_CLASS
                use_weighted_variance = (
                    threshold_group.use_weighted_variance.value == O_WEIGHTED_VARIANCE
                )
                assign_middle_to_foreground = (
                    threshold_group.assign_middle_to_foreground.value == O_FOREGROUND
                )
                (local_threshold, global_threshold) = (
                    centrosome.threshold.get_threshold(
                        threshold_method,
                        centrosome.threshold.TM_GLOBAL,
                        pixel_data,
                        mask=image.mask,
                        object_fraction=object_fraction,
                        two_class_otsu=two_class_otsu,
                        use_weighted_variance=use_weighted_variance,
                        assign_middle_to_foreground=assign_middle_to_foreground,
                    )
                    if image.has_mask
                    else centrosome.threshold.get_threshold(
                        threshold_method,
                        centrosome.threshold.TM_GLOBAL,
                        pixel_data,
                        object_fraction=object_fraction,
                        two_class_otsu=two_class_otsu,
                        use_weighted_variance=use_weighted_variance,
                        assign_middle_to_foreground=assign_middle_to_foreground,
                    )
                )

                scale = threshold_group.threshold_scale
                if scale is None:
                    threshold_description = threshold_method
                else:
                    threshold_description = threshold_method + " " + scale
                workspace.add_measurement(
                    "Image",
                    threshold_group.threshold_feature_name(image_name),
                    global_threshold,
                )
                result += [
                    [
                        "{} {} threshold".format(image_name, threshold_description),
                        str(global_threshold),
                    ]
                ]

        return result


class _MeasureImageIntensityCode:
    """MeasureImageIntensity 4.2.8: run and measure, verbatim."""

    def run(self, workspace):
        """Perform the measurements on the image sets"""
        col_labels = ["Image", "Masking object", "Feature", "Value"]
        statistics = []
        if self.wants_percentiles:
            percentiles = self.get_percentiles(self.percentiles.value, stop=True)
        else:
            percentiles = None
        for im in self.images_list.value:
            image = workspace.image_set.get_image(im, must_be_grayscale=True)
            input_pixels = image.pixel_data

            measurement_name = im
            if self.wants_objects.value:
                for object_set in self.objects_list.value:
                    measurement_name += "_" + object_set
                    objects = workspace.get_objects(object_set)
                    if objects.shape != input_pixels.shape:
                        raise ValueError(
                            "This module requires that the image and object sets have matching dimensions.\n"
                            "The %s image and %s objects do not (%s vs %s).\n"
                            "If they are paired correctly you may want to use the Resize, ResizeObjects or "
                            "Crop module(s) to make them the same size."
                            % (im, object_set, input_pixels.shape, objects.shape,)
                        )
                    if image.has_mask:
                        pixels = input_pixels[
                            numpy.logical_and(objects.segmented != 0, image.mask)
                        ]
                    else:
                        pixels = input_pixels[objects.segmented != 0]
                    statistics += self.measure(
                        pixels, im, object_set, measurement_name, workspace, percentiles=percentiles
                    )
            else:
                if image.has_mask:
                    pixels = input_pixels[image.mask]
                else:
                    pixels = input_pixels
                statistics += self.measure(
                    pixels, im, None, measurement_name, workspace, percentiles=percentiles
                )
        workspace.display_data.statistics = statistics
        workspace.display_data.col_labels = col_labels

    def measure(self, pixels, image_name, object_name, measurement_name, workspace, percentiles=None):
        """Perform measurements on an array of pixels
        pixels - image pixel data, masked to objects if applicable
        image_name - name of the current input image
        object_name - name of the current object set pixels are masked to
        measurement_name - group title to be used in data tables
        workspace - has all the details for current image set
        """
        pixel_count = numpy.product(pixels.shape)
        percentile_measures = {}
        if pixel_count == 0:
            pixel_sum = 0
            pixel_mean = 0
            pixel_std = 0
            pixel_mad = 0
            pixel_median = 0
            pixel_min = 0
            pixel_max = 0
            pixel_pct_max = 0
            pixel_lower_qrt = 0
            pixel_upper_qrt = 0
            if percentiles:
                for percentile in percentiles:
                    percentile_measures[percentile] = 0
        else:
            pixels = pixels.flatten()
            pixels = pixels[
                numpy.nonzero(numpy.isfinite(pixels))[0]
            ]  # Ignore NaNs, Infs
            pixel_count = numpy.product(pixels.shape)

            pixel_sum = numpy.sum(pixels)
            pixel_mean = pixel_sum / float(pixel_count)
            pixel_std = numpy.std(pixels)
            pixel_median = numpy.median(pixels)
            pixel_mad = numpy.median(numpy.abs(pixels - pixel_median))
            pixel_min = numpy.min(pixels)
            pixel_max = numpy.max(pixels)
            pixel_pct_max = (
                100.0 * float(numpy.sum(pixels == pixel_max)) / float(pixel_count)
            )
            pixel_lower_qrt, pixel_upper_qrt = numpy.percentile(pixels, [25, 75])

            if percentiles:
                percentile_results = numpy.percentile(pixels, percentiles)
                for percentile, res in zip(percentiles, percentile_results):
                    percentile_measures[percentile] = res


        m = workspace.measurements
        m.add_image_measurement(F_TOTAL_INTENSITY % measurement_name, pixel_sum)
        m.add_image_measurement(F_MEAN_INTENSITY % measurement_name, pixel_mean)
        m.add_image_measurement(F_MEDIAN_INTENSITY % measurement_name, pixel_median)
        m.add_image_measurement(F_STD_INTENSITY % measurement_name, pixel_std)
        m.add_image_measurement(F_MAD_INTENSITY % measurement_name, pixel_mad)
        m.add_image_measurement(F_MAX_INTENSITY % measurement_name, pixel_max)
        m.add_image_measurement(F_MIN_INTENSITY % measurement_name, pixel_min)
        m.add_image_measurement(F_TOTAL_AREA % measurement_name, pixel_count)
        m.add_image_measurement(F_PERCENT_MAXIMAL % measurement_name, pixel_pct_max)
        m.add_image_measurement(F_LOWER_QUARTILE % measurement_name, pixel_lower_qrt)
        m.add_image_measurement(F_UPPER_QUARTILE % measurement_name, pixel_upper_qrt)

        all_features = [
                ("Total intensity", pixel_sum),
                ("Mean intensity", pixel_mean),
                ("Median intensity", pixel_median),
                ("Std intensity", pixel_std),
                ("MAD intensity", pixel_mad),
                ("Min intensity", pixel_min),
                ("Max intensity", pixel_max),
                ("Pct maximal", pixel_pct_max),
                ("Lower quartile", pixel_lower_qrt),
                ("Upper quartile", pixel_upper_qrt),
                ("Total area", pixel_count),
        ]
        for percentile, value in percentile_measures.items():
            m.add_image_measurement(f"Intensity_Percentile_{percentile}_{measurement_name}", value)
            all_features.append((f"Percentile {percentile}", value))

        return [
            [
                image_name,
                object_name if self.wants_objects.value else "",
                feature_name,
                str(value),
            ]
            for feature_name, value in all_features
        ]


class _MeasureTextureCode:
    """MeasureTexture 4.2.8: the whole-image mode, verbatim."""

    def run_image(self, image_name, scale, workspace):
        statistics = []

        image = workspace.image_set.get_image(image_name, must_be_grayscale=True)

        # mahotas.features.haralick bricks itself when provided a dtype larger than uint8 (version 1.4.3)
        gray_levels = int(self.gray_levels.value)
        pixel_data = skimage.util.img_as_ubyte(image.pixel_data)
        if gray_levels != 256:
            pixel_data = skimage.exposure.rescale_intensity(
                pixel_data, in_range=(0, 255), out_range=(0, gray_levels - 1)
            ).astype(numpy.uint8)

        features = mahotas.features.haralick(pixel_data, distance=scale)

        for direction, direction_features in enumerate(features):
            object_name = "{:d}_{:02d}".format(scale, direction)

            for feature_name, feature in zip(F_HARALICK, direction_features):
                statistics += self.record_image_measurement(
                    feature_name=feature_name,
                    image_name=image_name,
                    result=feature,
                    scale=object_name,
                    workspace=workspace,
                    gray_levels="{:d}".format(gray_levels),
                )

        return statistics

    def record_image_measurement(
        self, workspace, image_name, scale, feature_name, result, gray_levels
    ):
        # TODO: this is very concerning
        if not numpy.isfinite(result):
            result = 0

        feature = "{}_{}_{}_{}_{}".format(
            TEXTURE, feature_name, image_name, str(scale), gray_levels
        )

        workspace.measurements.add_image_measurement(feature, result)

        statistics = [
            image_name,
            "-",
            feature_name,
            scale,
            "{:.2}".format(float(result)),
        ]

        return [statistics]


class _MeasureGranularityCode:
    """MeasureGranularity 4.2.8: run_on_image_setting (image spectrum and per-object records), verbatim."""

    def run_on_image_setting(self, workspace, image_name):
        assert isinstance(workspace, cellprofiler_core.workspace.Workspace)
        image_set = workspace.image_set
        measurements = workspace.measurements
        im = image_set.get_image(image_name, must_be_grayscale=True)
        #
        # Downsample the image and mask
        #
        new_shape = numpy.array(im.pixel_data.shape)
        if self.subsample_size.value < 1:
            new_shape = new_shape * self.subsample_size.value
            if im.dimensions == 2:
                i, j = (
                    numpy.mgrid[0 : new_shape[0], 0 : new_shape[1]].astype(float)
                    / self.subsample_size.value
                )
                pixels = scipy.ndimage.map_coordinates(im.pixel_data, (i, j), order=1)
                mask = (
                    scipy.ndimage.map_coordinates(im.mask.astype(float), (i, j)) > 0.9
                )
            else:
                k, i, j = (
                    numpy.mgrid[
                        0 : new_shape[0], 0 : new_shape[1], 0 : new_shape[2]
                    ].astype(float)
                    / self.subsample_size.value
                )
                pixels = scipy.ndimage.map_coordinates(
                    im.pixel_data, (k, i, j), order=1
                )
                mask = (
                    scipy.ndimage.map_coordinates(im.mask.astype(float), (k, i, j))
                    > 0.9
                )
        else:
            pixels = im.pixel_data.copy()
            mask = im.mask.copy()
        #
        # Remove background pixels using a greyscale tophat filter
        #
        if self.image_sample_size.value < 1:
            back_shape = new_shape * self.image_sample_size.value
            if im.dimensions == 2:
                i, j = (
                    numpy.mgrid[0 : back_shape[0], 0 : back_shape[1]].astype(float)
                    / self.image_sample_size.value
                )
                back_pixels = scipy.ndimage.map_coordinates(pixels, (i, j), order=1)
                back_mask = (
                    scipy.ndimage.map_coordinates(mask.astype(float), (i, j)) > 0.9
                )
            else:
                k, i, j = (
                    numpy.mgrid[
                        0 : new_shape[0], 0 : new_shape[1], 0 : new_shape[2]
                    ].astype(float)
                    / self.subsample_size.value
                )
                back_pixels = scipy.ndimage.map_coordinates(pixels, (k, i, j), order=1)
                back_mask = (
                    scipy.ndimage.map_coordinates(mask.astype(float), (k, i, j)) > 0.9
                )
        else:
            back_pixels = pixels
            back_mask = mask
            back_shape = new_shape
        radius = self.element_size.value
        if im.dimensions == 2:
            selem = skimage.morphology.disk(radius, dtype=bool)
        else:
            selem = skimage.morphology.ball(radius, dtype=bool)
        back_pixels_mask = numpy.zeros_like(back_pixels)
        back_pixels_mask[back_mask == True] = back_pixels[back_mask == True]
        back_pixels = skimage.morphology.erosion(back_pixels_mask, selem=selem)
        back_pixels_mask = numpy.zeros_like(back_pixels)
        back_pixels_mask[back_mask == True] = back_pixels[back_mask == True]
        back_pixels = skimage.morphology.dilation(back_pixels_mask, selem=selem)
        if self.image_sample_size.value < 1:
            if im.dimensions == 2:
                i, j = numpy.mgrid[0 : new_shape[0], 0 : new_shape[1]].astype(float)
                #
                # Make sure the mapping only references the index range of
                # back_pixels.
                #
                i *= float(back_shape[0] - 1) / float(new_shape[0] - 1)
                j *= float(back_shape[1] - 1) / float(new_shape[1] - 1)
                back_pixels = scipy.ndimage.map_coordinates(
                    back_pixels, (i, j), order=1
                )
            else:
                k, i, j = numpy.mgrid[
                    0 : new_shape[0], 0 : new_shape[1], 0 : new_shape[2]
                ].astype(float)
                k *= float(back_shape[0] - 1) / float(new_shape[0] - 1)
                i *= float(back_shape[1] - 1) / float(new_shape[1] - 1)
                j *= float(back_shape[2] - 1) / float(new_shape[2] - 1)
                back_pixels = scipy.ndimage.map_coordinates(
                    back_pixels, (k, i, j), order=1
                )
        pixels -= back_pixels
        pixels[pixels < 0] = 0

        #
        # For each object, build a little record
        #
        class ObjectRecord(object):
            def __init__(self, name):
                self.name = name
                self.labels = workspace.object_set.get_objects(name).segmented
                self.nobjects = numpy.max(self.labels)
                if self.nobjects != 0:
                    self.range = numpy.arange(1, numpy.max(self.labels) + 1)
                    self.labels = self.labels.copy()
                    self.labels[~im.mask] = 0
                    self.current_mean = fix(
                        scipy.ndimage.mean(im.pixel_data, self.labels, self.range)
                    )
                    self.start_mean = numpy.maximum(
                        self.current_mean, numpy.finfo(float).eps
                    )

        object_records = [
            ObjectRecord(objects_name) for objects_name in self.objects_list.value
        ]
        #
        # Transcribed from the Matlab module: granspectr function
        #
        # CALCULATES GRANULAR SPECTRUM, ALSO KNOWN AS SIZE DISTRIBUTION,
        # GRANULOMETRY, AND PATTERN SPECTRUM, SEE REF.:
        # J.Serra, Image Analysis and Mathematical Morphology, Vol. 1. Academic Press, London, 1989
        # Maragos,P. "Pattern spectrum and multiscale shape representation", IEEE Transactions on Pattern Analysis and Machine Intelligence, 11, N 7, pp. 701-716, 1989
        # L.Vincent "Granulometries and Opening Trees", Fundamenta Informaticae, 41, No. 1-2, pp. 57-90, IOS Press, 2000.
        # L.Vincent "Morphological Area Opening and Closing for Grayscale Images", Proc. NATO Shape in Picture Workshop, Driebergen, The Netherlands, pp. 197-208, 1992.
        # I.Ravkin, V.Temov "Bit representation techniques and image processing", Applied Informatics, v.14, pp. 41-90, Finances and Statistics, Moskow, 1988 (in Russian)
        # THIS IMPLEMENTATION INSTEAD OF OPENING USES EROSION FOLLOWED BY RECONSTRUCTION
        #
        ng = self.granular_spectrum_length.value
        startmean = numpy.mean(pixels[mask])
        ero = pixels.copy()
        # Mask the test image so that masked pixels will have no effect
        # during reconstruction
        #
        ero[~mask] = 0
        currentmean = startmean
        startmean = max(startmean, numpy.finfo(float).eps)

        if im.dimensions == 2:
            footprint = skimage.morphology.disk(1, dtype=bool)
        else:
            footprint = skimage.morphology.ball(1, dtype=bool)
        statistics = [image_name]
        for i in range(1, ng + 1):
            prevmean = currentmean
            ero_mask = numpy.zeros_like(ero)
            ero_mask[mask == True] = ero[mask == True]
            ero = skimage.morphology.erosion(ero_mask, selem=footprint)
            rec = skimage.morphology.reconstruction(ero, pixels, selem=footprint)
            currentmean = numpy.mean(rec[mask])
            gs = (prevmean - currentmean) * 100 / startmean
            statistics += ["%.2f" % gs]
            feature = self.granularity_feature(i, image_name)
            measurements.add_image_measurement(feature, gs)
            #
            # Restore the reconstructed image to the shape of the
            # original image so we can match against object labels
            #
            orig_shape = im.pixel_data.shape
            if im.dimensions == 2:
                i, j = numpy.mgrid[0 : orig_shape[0], 0 : orig_shape[1]].astype(float)
                #
                # Make sure the mapping only references the index range of
                # back_pixels.
                #
                i *= float(new_shape[0] - 1) / float(orig_shape[0] - 1)
                j *= float(new_shape[1] - 1) / float(orig_shape[1] - 1)
                rec = scipy.ndimage.map_coordinates(rec, (i, j), order=1)
            else:
                k, i, j = numpy.mgrid[
                    0 : orig_shape[0], 0 : orig_shape[1], 0 : orig_shape[2]
                ].astype(float)
                k *= float(new_shape[0] - 1) / float(orig_shape[0] - 1)
                i *= float(new_shape[1] - 1) / float(orig_shape[1] - 1)
                j *= float(new_shape[2] - 1) / float(orig_shape[2] - 1)
                rec = scipy.ndimage.map_coordinates(rec, (k, i, j), order=1)
            #
            # Calculate the means for the objects
            #
            for object_record in object_records:
                assert isinstance(object_record, ObjectRecord)
                if object_record.nobjects > 0:
                    new_mean = fix(
                        scipy.ndimage.mean(
                            rec, object_record.labels, object_record.range
                        )
                    )
                    gss = (
                        (object_record.current_mean - new_mean)
                        * 100
                        / object_record.start_mean
                    )
                    object_record.current_mean = new_mean
                else:
                    gss = numpy.zeros((0,))
                measurements.add_measurement(object_record.name, feature, gss)
        return statistics

    def granularity_feature(self, length, image_name):
        return C_GRANULARITY % (length, image_name)


class _ThresholdCode:
    """Threshold 4.2.8: the global threshold, the binary image and the image measurements, verbatim."""

    @property
    def threshold_operation(self):
        if self.threshold_scope.value == TS_GLOBAL:
            return self.global_operation.value

        return self.local_operation.value

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

    def add_threshold_measurements(
        self,
        objname,
        measurements,
        final_threshold,
        orig_threshold,
        guide_threshold=None,
    ):
        ave_final_threshold = numpy.mean(numpy.atleast_1d(final_threshold))
        ave_orig_threshold = numpy.mean(numpy.atleast_1d(orig_threshold))
        measurements.add_measurement(
            "Image", FF_FINAL_THRESHOLD % objname, ave_final_threshold,
        )

        measurements.add_measurement(
            "Image", FF_ORIG_THRESHOLD % objname, ave_orig_threshold,
        )

        if self.threshold_scope == TS_ADAPTIVE:
            measurements.add_measurement(
                "Image", FF_GUIDE_THRESHOLD % objname, guide_threshold,
            )

    def add_fg_bg_measurements(self, objname, measurements, image, binary_image):
        data = image.pixel_data

        mask = image.mask

        wv = centrosome.threshold.weighted_variance(data, mask, binary_image)

        measurements.add_measurement(
            "Image", FF_WEIGHTED_VARIANCE % objname, numpy.array([wv], dtype=float),
        )

        entropies = centrosome.threshold.sum_of_entropies(data, mask, binary_image)

        measurements.add_measurement(
            "Image",
            FF_SUM_OF_ENTROPIES % objname,
            numpy.array([entropies], dtype=float),
        )


class _MaskImageCode:
    """MaskImage 4.2.8: run, verbatim."""

    def run(self, workspace):
        image_set = workspace.image_set
        if self.source_choice == IO_OBJECTS:
            objects = workspace.get_objects(self.object_name.value)
            labels = objects.segmented
            if self.invert_mask.value:
                mask = labels == 0
            else:
                mask = labels > 0
        else:
            objects = None
            try:
                mask = image_set.get_image(
                    self.masking_image_name.value, must_be_binary=True
                ).pixel_data
            except ValueError:
                mask = image_set.get_image(
                    self.masking_image_name.value, must_be_grayscale=True
                ).pixel_data
                mask = mask > 0.5
            if self.invert_mask.value:
                mask = mask == 0
        orig_image = image_set.get_image(self.image_name.value)
        if (
            orig_image.multichannel and mask.shape != orig_image.pixel_data.shape[:-1]
        ) or mask.shape != orig_image.pixel_data.shape:
            tmp = numpy.zeros(orig_image.pixel_data.shape[:2], mask.dtype)
            tmp[mask] = True
            mask = tmp
        if orig_image.has_mask:
            mask = numpy.logical_and(mask, orig_image.mask)
        masked_pixels = orig_image.pixel_data.copy()
        masked_pixels[numpy.logical_not(mask)] = 0
        masked_image = Image(
            masked_pixels,
            mask=mask,
            parent_image=orig_image,
            masking_objects=objects,
            dimensions=orig_image.dimensions,
            convert=False
        )

        image_set.add(self.masked_image_name.value, masked_image)

        if self.show_window:
            workspace.display_data.dimensions = orig_image.dimensions
            workspace.display_data.orig_image_pixel_data = orig_image.pixel_data
            workspace.display_data.masked_pixels = masked_pixels
            workspace.display_data.multichannel = orig_image.multichannel


class _CorrectIlluminationCalculateCode:
    """CorrectIlluminationCalculate 4.2.8: the per-image Background function and its smoothing, verbatim."""

    def smoothing_filter_size(self, image_shape):
        """Return the smoothing filter size based on the settings and image size

        """
        if self.automatic_object_width == FI_MANUALLY:
            # Convert from full-width at half-maximum to standard deviation
            # (or so says CPsmooth.m)
            return self.size_of_smoothing_filter.value
        elif self.automatic_object_width == FI_OBJECT_SIZE:
            return self.object_width.value * 2.35 / 3.5
        elif self.automatic_object_width == FI_AUTOMATIC:
            return min(30, float(numpy.max(image_shape)) / 40.0)

    def preprocess_image_for_averaging(self, orig_image):
        """Create a version of the image appropriate for averaging

        """
        pixels = orig_image.pixel_data
        if self.intensity_choice == IC_REGULAR or self.smoothing_method == SM_SPLINES:
            if orig_image.has_mask:
                if pixels.ndim == 2:
                    pixels[~orig_image.mask] = 0
                else:
                    pixels[~orig_image.mask, :] = 0
                avg_image = Image(pixels, parent_image=orig_image)
            else:
                avg_image = orig_image
        else:
            # For background, we create a labels image using the block
            # size and find the minimum within each block.
            labels, indexes = centrosome.cpmorphology.block(
                pixels.shape[:2], (self.block_size.value, self.block_size.value)
            )
            if orig_image.has_mask:
                labels[~orig_image.mask] = -1

            min_block = numpy.zeros(pixels.shape)
            if pixels.ndim == 2:
                minima = centrosome.cpmorphology.fixup_scipy_ndimage_result(
                    scipy.ndimage.minimum(pixels, labels, indexes)
                )
                min_block[labels != -1] = minima[labels[labels != -1]]
            else:
                for i in range(pixels.shape[2]):
                    minima = centrosome.cpmorphology.fixup_scipy_ndimage_result(
                        scipy.ndimage.minimum(pixels[:, :, i], labels, indexes)
                    )
                    min_block[labels != -1, i] = minima[labels[labels != -1]]
            avg_image = Image(min_block, parent_image=orig_image)
        return avg_image

    def smooth_plane(self, pixel_data, mask):
        """Smooth one 2-d color plane of an image"""

        sigma = self.smoothing_filter_size(pixel_data.shape) / 2.35
        if self.smoothing_method == SM_FIT_POLYNOMIAL:
            output_pixels = centrosome.smooth.fit_polynomial(pixel_data, mask)
        elif self.smoothing_method == SM_GAUSSIAN_FILTER:
            #
            # Smoothing with the mask is good, even if there's no mask
            # because the mechanism undoes the edge effects that are introduced
            # by any choice of how to deal with border effects.
            #
            def fn(image):
                return scipy.ndimage.gaussian_filter(
                    image, sigma, mode="constant", cval=0
                )

            output_pixels = centrosome.smooth.smooth_with_function_and_mask(
                pixel_data, fn, mask
            )
        elif self.smoothing_method == SM_MEDIAN_FILTER:
            filter_sigma = max(1, int(sigma + 0.5))
            strel = centrosome.cpmorphology.strel_disk(filter_sigma)
            rescaled_pixel_data = pixel_data * 65535
            rescaled_pixel_data = rescaled_pixel_data.astype(numpy.uint16)
            rescaled_pixel_data *= mask
            output_pixels = skimage.filters.median(rescaled_pixel_data, strel, behavior="rank")
        elif self.smoothing_method == SM_TO_AVERAGE:
            mean = numpy.mean(pixel_data[mask])
            output_pixels = numpy.ones(pixel_data.shape, pixel_data.dtype) * mean
        elif self.smoothing_method == SM_SPLINES:
            output_pixels = self.smooth_with_splines(pixel_data, mask)
        elif self.smoothing_method == SM_CONVEX_HULL:
            output_pixels = self.smooth_with_convex_hull(pixel_data, mask)
        else:
            raise ValueError(
                "Unimplemented smoothing method: %s:" % self.smoothing_method.value
            )
        return output_pixels



class _S:
    """A setting: ``.value`` (and its truth value, as CellProfiler's Binary)."""
    def __init__(self, value):
        self.value = value

    def __bool__(self):
        return bool(self.value)

    def __eq__(self, other):
        return self.value == other

    __hash__ = None


class Image:
    """cellprofiler_core's Image as these modules use it: 2-D grey ``pixel_data``, ``mask``."""
    def __init__(self, image, mask=None, parent_image=None, masking_objects=None, dimensions=2,
                 convert=True, scale=None):
        self.pixel_data = image
        self.has_mask = mask is not None
        self.mask = _np.ones(image.shape[:2], bool) if mask is None else mask
        self.dimensions = dimensions
        self.multichannel = False
        self.volumetric = False
        self.scale = scale


class _Store:
    def __init__(self):
        self.values = {}

    def add_measurement(self, obj, name, value):
        if obj == "Image":
            self.values[name] = float(_np.asarray(value).ravel()[0])

    def add_image_measurement(self, name, value):
        self.values[name] = float(_np.asarray(value).ravel()[0])


class _ImageWorkspace:
    pass


cellprofiler_core = types.SimpleNamespace(
    workspace=types.SimpleNamespace(Workspace=_ImageWorkspace),
    constants=types.SimpleNamespace(image=types.SimpleNamespace(C_SCALING="Scaling")))


def _workspace(images, objects=None):
    ws = _ImageWorkspace()
    store = _Store()
    ws.measurements = store
    ws.add_measurement = store.add_measurement
    ws.image_set = types.SimpleNamespace(get_image=lambda name, **kw: images[name],
                                         add=lambda name, image: images.__setitem__(name, image))
    ws.object_set = types.SimpleNamespace(get_objects=lambda name: objects[name])
    ws.get_objects = lambda name: objects[name]
    ws.pipeline = types.SimpleNamespace(volumetric=lambda: False)
    ws.display_data = types.SimpleNamespace()
    return ws


class MeasureImageQuality(_MeasureImageQualityCode):
    """JUMP_analysis_v3 modules 3 and 4: one image, its blur scales, its Otsu threshold groups."""
    def __init__(self, image_name, scales, thresholds):
        self.image_name = image_name
        self.scale_groups = [types.SimpleNamespace(scale=_S(s)) for s in scales]
        self.groups = [
            types.SimpleNamespace(threshold_algorithm="Otsu", object_fraction=_S(0.1),
                                  two_class_otsu=_S(O_TWO_CLASS if two else O_THREE_CLASS),
                                  use_weighted_variance=_S(O_WEIGHTED_VARIANCE),
                                  assign_middle_to_foreground=_S(O_FOREGROUND if fg else O_BACKGROUND),
                                  threshold_scale=suffix,
                                  threshold_feature_name=lambda name, s=suffix: f"ImageQuality_ThresholdOtsu_{name}_{s}")
            for two, fg, suffix in thresholds]

    def images_to_process(self, image_group, workspace, pipeline=None):
        return [self.image_name]

    def get_all_threshold_groups(self, image_group):
        return self.groups


def cp_image_quality(pixels, name, scale, blur_scales, thresholds=()):
    """MeasureImageQuality (scaling, blur, saturation, intensity, thresholds) of one image:
    ``thresholds``: (two classes, middle to foreground, feature suffix) per Otsu group."""
    images = {name: Image(pixels, scale=scale)}
    ws = _workspace(images)
    mod = MeasureImageQuality(name, blur_scales, thresholds)
    group = types.SimpleNamespace(scale_groups=mod.scale_groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod.retrieve_image_scalings(group, ws)
        mod.calculate_focus_scores(group, ws)
        mod.calculate_correlation(group, ws)
        mod.calculate_power_spectrum(group, ws)
        mod.calculate_saturation(group, ws)
        mod.run_intensity_measurement(name, ws)
        if thresholds:
            mod.calculate_thresholds(group, ws)
    return ws.measurements.values


class MeasureImageIntensity(_MeasureImageIntensityCode):
    wants_percentiles = False
    wants_objects = _S(False)

    def __init__(self, names):
        self.images_list = _S(list(names))


class MaskImage(_MaskImageCode):
    """JUMP's MaskImage modules 26-33: the image outside CellsIncludingEdges."""
    source_choice = IO_OBJECTS
    object_name = _S("CellsIncludingEdges")
    invert_mask = _S(True)
    show_window = False

    def __init__(self, image_name, masked_name):
        self.image_name = _S(image_name)
        self.masked_image_name = _S(masked_name)


def cp_image_intensity(pixels, name, cells, background_name):
    """MaskImage + MeasureImageIntensity of one image and its background-only image."""
    images = {name: Image(pixels)}
    objects = {"CellsIncludingEdges": types.SimpleNamespace(segmented=cells)}
    ws = _workspace(images, objects)
    MaskImage(name, background_name).run(ws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MeasureImageIntensity([name, background_name]).run(ws)
    return ws.measurements.values


class MeasureTexture(_MeasureTextureCode):
    def __init__(self, levels):
        self.gray_levels = _S(levels)


def cp_texture_image(pixels, name, scales, levels):
    """MeasureTexture's whole-image features of one image at each scale."""
    ws = _workspace({name: Image(pixels)})
    mod = MeasureTexture(levels)
    for s in scales:
        mod.run_image(name, s, ws)
    return ws.measurements.values


class MeasureGranularity(_MeasureGranularityCode):
    def __init__(self, subsample, background, radius, length):
        self.subsample_size = _S(subsample)
        self.image_sample_size = _S(background)
        self.element_size = _S(radius)
        self.granular_spectrum_length = _S(length)
        self.objects_list = _S([])


def cp_granularity_image(pixels, name, subsample, background, radius, length):
    """MeasureGranularity's image spectrum of one image."""
    ws = _workspace({name: Image(pixels)})
    MeasureGranularity(subsample, background, radius, length).run_on_image_setting(ws, name)
    return ws.measurements.values


class Threshold(_ThresholdCode):
    """A global Threshold module (or Identify's threshold step) with the given settings."""
    threshold_scope = _S(TS_GLOBAL)

    def __init__(self, method, smoothing, correction, lower, upper, three_class, middle_fg, log):
        self.global_operation = _S(method)
        self.threshold_smoothing_scale = _S(smoothing)
        self.threshold_correction_factor = _S(correction)
        self.threshold_range = types.SimpleNamespace(min=lower, max=upper)
        self.two_class_otsu = _S(O_THREE_CLASS if three_class else O_TWO_CLASS)
        self.assign_middle_to_foreground = _S("Foreground" if middle_fg else "Background")
        self.log_transform = _S(log)


def cp_threshold(pixels, objects_name, **settings):
    """The threshold measurements (``Threshold_*_{objects_name}``) of ``pixels``, as an Identify
    module's ``_threshold_image`` (and the Threshold module's run) record them."""
    image = Image(pixels)
    ws = _workspace({"image": image})
    mod = Threshold(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final, orig, guide = mod.get_threshold(image, ws, automatic=False)
        mod.add_threshold_measurements(objects_name, ws.measurements, final, orig, guide)
        binary, _ = mod.apply_threshold(image, final, automatic=False)
        mod.add_fg_bg_measurements(objects_name, ws.measurements, image, binary)
    return ws.measurements.values


class CorrectIlluminationCalculate(_CorrectIlluminationCalculateCode):
    """JUMP_analysis_v3 module 6: Background, block 30, Gaussian filter of size 50, each image."""
    intensity_choice = IC_BACKGROUND
    smoothing_method = SM_GAUSSIAN_FILTER
    automatic_object_width = FI_MANUALLY

    def __init__(self, block, filter_size):
        self.block_size = _S(block)
        self.size_of_smoothing_filter = _S(filter_size)


def cp_corr_blue(pixels, block, filter_size):
    """CorrBlue: the illumination function of one image (module 6) subtracted and clipped (module 7)."""
    mod = CorrectIlluminationCalculate(block, filter_size)
    avg = mod.preprocess_image_for_averaging(Image(pixels))
    illum = mod.smooth_plane(avg.pixel_data, avg.mask)
    out = pixels - illum
    out[out < 0] = 0
    out[out > 1] = 1
    return out
