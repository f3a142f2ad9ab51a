-- Refuse MR images over DICOM (only C-STORE: uploads over REST are not asked), and
-- count heart beats.
beats = 0

function IncomingCStoreInstanceFilter(dicom, origin)
   return dicom.Modality ~= 'MR' and origin.RemoteAet ~= 'BLOCKED'
end

function OnHeartBeat()
   beats = beats + 1
end
