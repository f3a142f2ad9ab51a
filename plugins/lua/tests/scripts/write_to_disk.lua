-- The Orthanc Book's "write to disk" sample, in our own words: once a series is stable,
-- copy each of its files to TARGET/<PatientID>/<StudyDate>/<SeriesDescription>/<id>.dcm.
-- TARGET is defined by a script loaded before this one.

local function safe(text)
   return (string.gsub(text or '', '[^%w%-]', '_'))
end

function OnStableSeries(seriesId, tags, metadata)
   local series = ParseJson(RestApiGet('/series/' .. seriesId))
   local study = ParseJson(RestApiGet('/series/' .. seriesId .. '/study'))
   local folder = TARGET .. '/' .. safe(study['PatientMainDicomTags']['PatientID']) .. '/'
      .. safe(study['MainDicomTags']['StudyDate']) .. '/'
      .. safe(series['MainDicomTags']['SeriesDescription'])
   os.execute('mkdir -p "' .. folder .. '"')
   for _, instance in ipairs(series['Instances']) do
      local file = assert(io.open(folder .. '/' .. instance .. '.dcm', 'wb'))
      file:write(RestApiGet('/instances/' .. instance .. '/file'))
      file:close()
   end
end
