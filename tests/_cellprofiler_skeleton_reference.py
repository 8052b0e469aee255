"""CellProfiler 4.2.8's Threshold (global), MorphologicalSkeleton and MeasureObjectSkeleton code (the JUMP
mito skeleton), verbatim, as a test reference for ``pairedscreen.paint.features.skeleton``.

Source: github.com/CellProfiler/CellProfiler, tag v4.2.8 (commit 2df090ff281cff80943fe679a1c3192fbda9cd6d).
Kept apart from ``_cellprofiler_reference.py`` (colocalization and the JUMP image measurements), whose glue
defines its own ``Image`` and ``Threshold``; the Threshold module's verbatim methods are taken from there
(``_ThresholdCode``), only its ``run`` is here. The glue below is ours: settings as plain attributes (the JUMP
pipeline's values), an image set, a measurement store, and a ``numpy`` namespace that maps the names NumPy 2
removed (``numpy.product``, ``numpy.NaN``) to their current equivalents; ``fix`` is centrosome's
``fixup_scipy_ndimage_result`` as in the modules.

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

import numpy as _np
import scipy.ndimage
from centrosome.cpmorphology import fixup_scipy_ndimage_result as fix

numpy = types.SimpleNamespace(**{k: getattr(_np, k) for k in dir(_np) if not k.startswith("__")})
numpy.product = _np.prod
numpy.NaN = _np.nan


class _Objects:
    def __init__(self, labels):
        self.segmented = labels
        self.count = int(labels.max())

    def crop_image_similarly(self, image):
        return image

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
from _cellprofiler_reference import _ThresholdCode
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


class Threshold(_ThresholdCode):
    """Threshold 4.2.8 with the JUMP mito_bw settings: ``run`` here (its measurements replaced by glue), the
    verbatim apply/get threshold methods from ``_cellprofiler_reference._ThresholdCode`` (the same code)."""

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
