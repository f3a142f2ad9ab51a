-- The Orthanc Book's filter sample: only accept CT images.
function ReceivedInstanceFilter(dicom, origin, info)
   return dicom.Modality == 'CT'
end
