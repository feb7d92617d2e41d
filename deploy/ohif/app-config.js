/* OHIF Viewer configuration for the research portal (copied over OHIF's own by build.sh).
 *
 * OHIF is served under /ohif/ on the portal's origin (deploy/nginx.conf), so its DICOMweb
 * requests go to the portal's /dicomweb with the signed-in user's session cookie: a user sees
 * exactly the studies of the projects they may read, as on the portal's own pages. Someone who
 * is not signed in gets 401 from DICOMweb; the portal's study pages link here after sign-in.
 */
const portalDicomweb = `${window.location.origin}/dicomweb`;

window.config = {
  name: 'research-portal',
  routerBasename: '/ohif/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 75, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'portal',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'portal',
      configuration: {
        friendlyName: 'Research portal',
        name: 'portal',
        wadoUriRoot: portalDicomweb,
        qidoRoot: portalDicomweb,
        wadoRoot: portalDicomweb,
        // The portal answers includefield, fuzzy matching and wildcards (imaging/dicomweb/query.py).
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
