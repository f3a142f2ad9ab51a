-- Initialize runs once, after every script is loaded; globals are shared by all.
calls = {}

function Initialize()
   table.insert(calls, 'Initialize')
end

function OnStablePatient(patientId, tags, metadata)
   table.insert(calls, 'OnStablePatient ' .. tags['PatientID'])
end

function OnDeletedInstance(instanceId)
   table.insert(calls, 'OnDeletedInstance ' .. instanceId)
end
